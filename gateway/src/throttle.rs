//! Per-device limits: a token bucket per device, and the episodes of
//! misbehaviour that the hub turns into a technical alert.
//!
//! A broken device (a firmware loop publishing 1 000 messages a second, a
//! 10 MB payload) must not slow down the other patients' data. The batcher
//! asks [`Throttle::admit`] about every message *before* parsing it, so an
//! over-limit message costs a hash-map lookup and is never validated, stored
//! or passed on. It is still acknowledged to the broker (unacknowledged, it
//! would be redelivered forever) and answered on `…/err` with
//! `rate_limited`, at most once per [`REPLY_EVERY`] per device, so the
//! replies do not become a flood of their own (only for a reply is the
//! payload hashed, and its first record read, for the reply's `ref`).
//!
//! ## The token bucket
//!
//! Each device has a bucket of `burst` tokens that refills at `rate` tokens
//! per second; a message takes one token, and a message that finds the
//! bucket empty is over the limit. `burst` lets a device upload a backlog
//! (a scale that was offline for a week) at full speed; `rate` is what it
//! may keep up for ever. A real device sends far less: a CTG monitor sends
//! one 10 s pack every 10 s.
//!
//! ## Episodes
//!
//! The first over-limit (or too-large) message of a device starts an
//! *episode*: reported once to the [`Sink`](crate::Sink) as
//! [`LimitReport::Exceeded`], which the hub raises as a technical alert.
//! Further violations only count. When the device has kept within its
//! limits for `calm_after`, the episode ends with [`LimitReport::Calm`] and
//! the alert clears itself (the hysteresis keeps a device that hovers at
//! the limit from flapping).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::error::RejectCode;
use crate::topics::DeviceId;

/// At most one `rate_limited` reply per device this often.
pub const REPLY_EVERY: Duration = Duration::from_secs(1);

/// How many messages a device may send.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// Sustained messages per second per device.
    pub rate: f64,
    /// Messages a device may send at once (the bucket's size).
    pub burst: f64,
    /// An episode ends after this long within the limits.
    pub calm_after: Duration,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            rate: 20.0,
            burst: 2_000.0,
            calm_after: Duration::from_secs(60),
        }
    }
}

/// A device's misbehaviour, as reported to the [`Sink`](crate::Sink).
#[derive(Debug, Clone, PartialEq)]
pub enum LimitReport {
    /// An episode began: the device sent too fast (`RateLimited`) or too
    /// much at once (`TooLarge`).
    Exceeded {
        device: DeviceId,
        code: RejectCode,
        /// Words for an administrator (no patient data: sizes and rates).
        detail: String,
    },
    /// The device has kept within its limits for `calm_after`; `dropped` is
    /// how many of its messages the episode refused.
    Calm { device: DeviceId, dropped: u64 },
}

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Over the rate; `reply` says whether to answer on `…/err` this time.
    RateLimited {
        reply: bool,
    },
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// Since when the current episode runs, and its last violation.
    episode: Option<Episode>,
    last_reply: Option<Instant>,
}

#[derive(Debug)]
struct Episode {
    last_violation: Instant,
    dropped: u64,
}

/// The buckets of all devices that sent recently.
#[derive(Debug)]
pub struct Throttle {
    limit: RateLimit,
    buckets: HashMap<DeviceId, Bucket>,
}

impl Throttle {
    pub fn new(limit: RateLimit) -> Throttle {
        Throttle {
            limit,
            buckets: HashMap::new(),
        }
    }

    pub fn limit(&self) -> &RateLimit {
        &self.limit
    }

    fn bucket(&mut self, device: &DeviceId, now: Instant) -> &mut Bucket {
        let (rate, burst) = (self.limit.rate, self.limit.burst);
        let b = self.buckets.entry(device.clone()).or_insert(Bucket {
            tokens: burst,
            refilled: now,
            episode: None,
            last_reply: None,
        });
        let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.refilled = now;
        b
    }

    /// Takes a token for one message of `device` received at `now`. A
    /// message over the limit may start an episode, returned in `reports`.
    pub fn admit(
        &mut self,
        device: &DeviceId,
        now: Instant,
        reports: &mut Vec<LimitReport>,
    ) -> Admit {
        let limit = self.limit.clone();
        let b = self.bucket(device, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Admit::Yes;
        }
        if b.episode.is_none() {
            reports.push(LimitReport::Exceeded {
                device: device.clone(),
                code: RejectCode::RateLimited,
                detail: format!(
                    "the device sent more than {} messages at once and then more than {} per second",
                    limit.burst, limit.rate
                ),
            });
        }
        violation(b, now);
        let reply = b
            .last_reply
            .is_none_or(|t| now.saturating_duration_since(t) >= REPLY_EVERY);
        if reply {
            b.last_reply = Some(now);
        }
        Admit::RateLimited { reply }
    }

    /// Notes a message of `device` refused as too large (it took its token
    /// in [`Throttle::admit`] already). May start an episode.
    pub fn too_large(
        &mut self,
        device: &DeviceId,
        bytes: usize,
        now: Instant,
        reports: &mut Vec<LimitReport>,
    ) {
        let b = self.bucket(device, now);
        if b.episode.is_none() {
            reports.push(LimitReport::Exceeded {
                device: device.clone(),
                code: RejectCode::TooLarge,
                detail: format!("the device sent a message of {bytes} bytes"),
            });
        }
        violation(b, now);
    }

    /// Ends the episodes of devices that kept within their limits for
    /// `calm_after`, and forgets devices whose bucket is full again (so the
    /// map holds only devices that sent recently, whatever ids are tried).
    pub fn sweep(&mut self, now: Instant, reports: &mut Vec<LimitReport>) {
        let (rate, burst, calm) = (self.limit.rate, self.limit.burst, self.limit.calm_after);
        self.buckets.retain(|device, b| {
            if let Some(e) = &b.episode
                && now.saturating_duration_since(e.last_violation) >= calm
            {
                reports.push(LimitReport::Calm {
                    device: device.clone(),
                    dropped: e.dropped,
                });
                b.episode = None;
            }
            let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
            let full = b.tokens + elapsed * rate >= burst;
            b.episode.is_some() || !full
        });
    }

    /// Devices with a running episode.
    pub fn flooding(&self) -> usize {
        self.buckets
            .values()
            .filter(|b| b.episode.is_some())
            .count()
    }
}

fn violation(b: &mut Bucket, now: Instant) {
    let e = b.episode.get_or_insert(Episode {
        last_violation: now,
        dropped: 0,
    });
    e.last_violation = now;
    e.dropped += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(s: &str) -> DeviceId {
        DeviceId::parse(s).unwrap()
    }

    fn limit() -> RateLimit {
        RateLimit {
            rate: 10.0,
            burst: 5.0,
            calm_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn burst_then_rate() {
        let mut t = Throttle::new(limit());
        let mut reports = Vec::new();
        let t0 = Instant::now();
        let a = dev("a");
        for _ in 0..5 {
            assert_eq!(t.admit(&a, t0, &mut reports), Admit::Yes);
        }
        assert_eq!(
            t.admit(&a, t0, &mut reports),
            Admit::RateLimited { reply: true }
        );
        // One episode, one report, one reply per second.
        assert_eq!(
            t.admit(&a, t0, &mut reports),
            Admit::RateLimited { reply: false }
        );
        assert_eq!(reports.len(), 1);
        assert!(matches!(
            &reports[0],
            LimitReport::Exceeded {
                code: RejectCode::RateLimited,
                ..
            }
        ));
        // 100 ms at 10/s is one more token.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(t.admit(&a, t1, &mut reports), Admit::Yes);
        assert!(matches!(
            t.admit(&a, t1, &mut reports),
            Admit::RateLimited { .. }
        ));
        assert_eq!(reports.len(), 1, "still the same episode");
    }

    #[test]
    fn devices_have_their_own_buckets() {
        let mut t = Throttle::new(limit());
        let mut reports = Vec::new();
        let now = Instant::now();
        for _ in 0..100 {
            t.admit(&dev("flood"), now, &mut reports);
        }
        for _ in 0..5 {
            assert_eq!(t.admit(&dev("calm"), now, &mut reports), Admit::Yes);
        }
    }

    #[test]
    fn episode_ends_after_calm_and_idle_devices_are_forgotten() {
        let mut t = Throttle::new(limit());
        let mut reports = Vec::new();
        let t0 = Instant::now();
        let a = dev("a");
        for _ in 0..8 {
            t.admit(&a, t0, &mut reports);
        }
        assert_eq!(t.flooding(), 1);
        reports.clear();
        // Still within calm_after of the last violation: the episode runs.
        t.sweep(t0 + Duration::from_secs(29), &mut reports);
        assert!(reports.is_empty());
        t.sweep(t0 + Duration::from_secs(30), &mut reports);
        assert_eq!(
            reports,
            vec![LimitReport::Calm {
                device: a.clone(),
                dropped: 3
            }]
        );
        assert_eq!(t.flooding(), 0);
        assert!(t.buckets.is_empty(), "a full bucket is forgotten");
    }

    #[test]
    fn too_large_starts_an_episode_once() {
        let mut t = Throttle::new(limit());
        let mut reports = Vec::new();
        let now = Instant::now();
        let a = dev("a");
        t.too_large(&a, 10 << 20, now, &mut reports);
        t.too_large(&a, 10 << 20, now, &mut reports);
        assert_eq!(reports.len(), 1);
        assert!(matches!(
            &reports[0],
            LimitReport::Exceeded {
                code: RejectCode::TooLarge,
                ..
            }
        ));
    }
}
