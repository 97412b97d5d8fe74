//! SenML: any bytes through the record parser and the resolution of base
//! fields (RFC 8428 §4.6). Nothing may panic, and what resolves must make
//! sense: a name, a finite time, a finite number where there is one; and a
//! pack that parsed must survive a round trip through JSON unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vaka_gateway::senml::{self, Record, Value};

/// A fixed "now" (2026-12-01), so that a crash reproduces.
const NOW_SECS: f64 = 1_796_083_200.0;

fuzz_target!(|data: &[u8]| {
    let Ok(records) = serde_json::from_slice::<Vec<Record<'_>>>(data) else {
        return;
    };
    let json = serde_json::to_string(&records).expect("parsed records serialize");
    let again: Vec<Record<'_>> = serde_json::from_str(&json).expect("serialized records parse");
    assert_eq!(records, again, "round trip changed the pack: {json}");

    let Ok(resolved) = senml::resolve(records, NOW_SECS) else {
        return;
    };
    assert!(!resolved.is_empty());
    for r in &resolved {
        assert!(!r.name.is_empty());
        assert!(r.time.is_finite(), "time {}", r.time);
        if let Value::Number(v) = r.value {
            assert!(v.is_finite(), "value {v}");
        }
    }
});
