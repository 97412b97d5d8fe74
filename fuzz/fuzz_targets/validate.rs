//! Validation of a whole message: a topic and a payload, as the gateway
//! gets them from the broker. The input is `topic\npayload` (the seeds are
//! real topics and packs). Nothing may panic; an accepted message holds only
//! what the contract accepts, a rejection carries a code and a reason, and
//! the reference always has the contract's form.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vaka_gateway::model::{Content, Metric};
use vaka_gateway::topics::ParsedTopic;
use vaka_gateway::validate::{self, Limits};
use vaka_gateway::{RejectCode, TopicRoot, UnixMillis};

/// A fixed "now" (2026-12-01T00:00:00Z), so that a crash reproduces.
const NOW: UnixMillis = UnixMillis(1_796_083_200_000);

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let topic = String::from_utf8_lossy(&data[..split]);
    let payload = data.get(split + 1..).unwrap_or_default();
    let root = TopicRoot::new("vaka/v1").expect("a valid root");
    let ParsedTopic::Device(device, channel) = root.parse(&topic) else {
        return;
    };
    let limits = Limits::default();
    let verdict = validate::validate(&device, channel, payload, NOW, &limits);

    let (time, hash) = verdict
        .reference
        .rsplit_once(':')
        .expect("a reference has a colon");
    assert!(hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(time.is_empty() || time.parse::<f64>().is_ok(), "{time}");

    match verdict.outcome {
        Err(rejection) => {
            assert!(!rejection.detail.is_empty());
            // These come from the store and the rate limiter, never from here.
            assert!(!matches!(
                rejection.code,
                RejectCode::UnknownDevice | RejectCode::UnboundDevice | RejectCode::RateLimited
            ));
        }
        Ok(accepted) => {
            let in_window = |t: UnixMillis| {
                t.millis_since(NOW) <= limits.max_future_ms
                    && NOW.millis_since(t) <= limits.max_age_ms
            };
            match &accepted.content {
                Content::Observations(obs) => {
                    assert!(!obs.is_empty() || accepted.fhr_artefacts > 0);
                    for o in obs {
                        assert!(o.metric.in_range(o.value), "{o:?}");
                        assert!(in_window(o.time), "{o:?}");
                        assert!(o.metric != Metric::Fhr || (50.0..=240.0).contains(&o.value));
                    }
                }
                Content::Events(events) => {
                    assert!(!events.is_empty());
                    assert!(events.iter().all(|e| in_window(e.time)));
                }
                Content::Status(status) => {
                    assert!(!status.is_empty());
                    assert!(status.iter().all(|s| in_window(s.time)));
                }
            }
        }
    }
});
