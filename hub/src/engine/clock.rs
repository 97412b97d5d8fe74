//! The hub's clock, injectable so that tests drive time-driven rules in
//! milliseconds instead of minutes.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use vaka_gateway::UnixMillis;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> UnixMillis;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        UnixMillis::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(at: UnixMillis) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(at.0)))
    }

    pub fn set(&self, at: UnixMillis) {
        self.0.store(at.0, Ordering::SeqCst);
    }

    pub fn advance_millis(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.0.load(Ordering::SeqCst))
    }
}

/// A clock that follows tokio's clock from a given start. Under
/// `tokio::time::pause()` a test moves it with `tokio::time::advance`, and
/// the engine task's timers fire exactly as they would in real time.
#[derive(Debug, Clone)]
pub struct TokioClock {
    start: UnixMillis,
    base: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(start: UnixMillis) -> TokioClock {
        TokioClock {
            start,
            base: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> UnixMillis {
        self.start
            .plus_millis(self.base.elapsed().as_millis() as i64)
    }
}
