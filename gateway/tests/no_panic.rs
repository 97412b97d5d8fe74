//! No input can panic the gateway's decoder and validator: arbitrary bytes
//! on arbitrary topics, and (to get past the JSON parser) arbitrary packs
//! of SenML-shaped records. Every message ends as accepted content that
//! keeps the contract, or as a rejection with a code and a reason; and the
//! reference of the error reply always has the contract's form.
//!
//! The fuzz targets in `fuzz/` search the same space with coverage
//! guidance; this runs on stable in every `cargo test`.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use vaka_gateway::model::Content;
use vaka_gateway::topics::ParsedTopic;
use vaka_gateway::validate::{self, Limits, Verdict};
use vaka_gateway::{RejectCode, TopicRoot, UnixMillis};

/// 2026-12-01T00:00:00Z.
const NOW: UnixMillis = UnixMillis(1_796_083_200_000);

/// What validation may answer by itself (the rest come from the store and
/// the rate limiter).
const OWN_CODES: [RejectCode; 9] = [
    RejectCode::BadJson,
    RejectCode::BadSenml,
    RejectCode::UnknownName,
    RejectCode::BadUnit,
    RejectCode::OutOfRange,
    RejectCode::FutureTime,
    RejectCode::TooOld,
    RejectCode::TopicMismatch,
    RejectCode::TooLarge,
];

/// Topics: mostly ours (any device id, any last level), some not.
fn any_topic() -> impl Strategy<Value = String> {
    let device = prop_oneof!["[A-Za-z0-9_-]{1,64}", ".{0,70}", Just("scale-1".to_owned()),];
    let channel = prop_oneof![
        Just("obs"),
        Just("evt"),
        Just("status"),
        Just("err"),
        Just("cmd"),
        Just("nope"),
    ];
    prop_oneof![
        (device, channel).prop_map(|(d, c)| format!("vaka/v1/d/{d}/{c}")),
        ".{0,80}",
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        (-1_000i64..400).prop_map(|i| json!(i)),
        (1_700_000_000i64..1_900_000_000).prop_map(|i| json!(i)),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|i| json!(i)),
    ]
}

fn text() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            "weight",
            "sys",
            "dia",
            "map",
            "hr",
            "spo2",
            "temp",
            "fhr",
            "toco",
            "sigq",
            "fall",
            "help_button",
            "dose_due",
            "dose_taken",
            "conn",
            "batt",
            "rssi",
            "fw",
            "hb",
            "doses_left",
            "online",
            "offline",
            "kg",
            "mm[Hg]",
            "beat/min",
            "%",
            "Cel",
            "dBm",
            "s",
            "count",
            "urn:dev:vaka:scale-1:",
            "urn:dev:vaka:other:",
            "urn:dev:vaka:",
            "urn:dev:vaka:scale-1",
            "",
        ])
        .prop_map(|s| json!(s)),
        ".{0,80}".prop_map(|s| json!(s)),
    ]
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text(),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A SenML-shaped record: the record fields with values of any type,
/// mostly the right one.
fn record() -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        Just("bn"),
        Just("bt"),
        Just("bu"),
        Just("bv"),
        Just("bver"),
        Just("n"),
        Just("u"),
        Just("v"),
        Just("vs"),
        Just("vb"),
        Just("vd"),
        Just("s"),
        Just("t"),
        Just("x"),
    ];
    let value = prop_oneof![
        4 => number(),
        4 => text(),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any_json(),
    ];
    prop::collection::vec((field, value), 0..8).prop_map(|fields| {
        let mut m = Map::new();
        for (k, v) in fields {
            m.insert(k.to_owned(), v);
        }
        Value::Object(m)
    })
}

fn pack() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::collection::vec(record(), 0..12)
            .prop_map(|r| serde_json::to_vec(&r).unwrap_or_default()),
        1 => any_json().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

/// The checks every verdict must pass.
fn check(verdict: &Verdict, limits: &Limits) -> Result<(), TestCaseError> {
    let (time, hash) = verdict
        .reference
        .rsplit_once(':')
        .ok_or_else(|| TestCaseError::fail("a reference without ':'"))?;
    prop_assert!(hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
    prop_assert!(time.is_empty() || time.parse::<f64>().is_ok(), "{}", time);
    let in_window = |t: UnixMillis| {
        t.millis_since(NOW) <= limits.max_future_ms && NOW.millis_since(t) <= limits.max_age_ms
    };
    match &verdict.outcome {
        Err(rejection) => {
            prop_assert!(OWN_CODES.contains(&rejection.code), "{:?}", rejection);
            prop_assert!(!rejection.detail.is_empty());
        }
        Ok(accepted) => match &accepted.content {
            Content::Observations(obs) => {
                prop_assert!(!obs.is_empty() || accepted.fhr_artefacts > 0);
                for o in obs {
                    prop_assert!(o.metric.in_range(o.value), "{:?}", o);
                    prop_assert!(in_window(o.time), "{:?}", o);
                }
            }
            Content::Events(events) => {
                prop_assert!(!events.is_empty());
                prop_assert!(events.iter().all(|e| in_window(e.time)));
            }
            Content::Status(status) => {
                prop_assert!(!status.is_empty());
                prop_assert!(status.iter().all(|s| in_window(s.time)));
            }
        },
    }
    Ok(())
}

fn run(topic: &str, payload: &[u8]) -> Result<Option<Verdict>, TestCaseError> {
    let root = TopicRoot::new("vaka/v1").expect("a valid root");
    let limits = Limits::default();
    let ParsedTopic::Device(device, channel) = root.parse(topic) else {
        return Ok(None);
    };
    let verdict = validate::validate(&device, channel, payload, NOW, &limits);
    check(&verdict, &limits)?;
    Ok(Some(verdict))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_on_arbitrary_topics(
        topic in any_topic(),
        payload in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        run(&topic, &payload)?;
    }

    #[test]
    fn senml_shaped_packs_on_device_topics(
        device in "[A-Za-z0-9_-]{1,64}",
        channel in prop::sample::select(vec!["obs", "evt", "status", "err", "cmd"]),
        payload in pack(),
    ) {
        let verdict = run(&format!("vaka/v1/d/{device}/{channel}"), &payload)?;
        prop_assert!(verdict.is_some(), "a device topic is always validated");
    }

    /// The device of the topic, its base name, and the vocabulary: these get
    /// as far as the range and time checks.
    #[test]
    fn nearly_valid_packs(
        name in prop::sample::select(vec![
            "weight", "sys", "dia", "hr", "spo2", "temp", "fhr", "toco", "sigq", "fall",
            "dose_due", "conn", "batt", "rssi", "fw", "hb", "doses_left",
        ]),
        unit in prop::sample::select(vec!["kg", "mm[Hg]", "beat/min", "%", "Cel", "dBm", "s", ""]),
        value in number(),
        bt in prop_oneof![number(), Just(json!(1_796_083_100))],
        t in prop::collection::vec(number(), 1..6),
        channel in prop::sample::select(vec!["obs", "evt", "status"]),
    ) {
        let mut records = vec![json!({
            "bn": "urn:dev:vaka:scale-1:", "bt": bt, "n": name, "u": unit, "v": value,
        })];
        for offset in t {
            records.push(json!({"n": name, "u": unit, "v": value, "t": offset}));
        }
        let payload = serde_json::to_vec(&records).unwrap_or_default();
        run(&format!("vaka/v1/d/scale-1/{channel}"), &payload)?;
    }
}
