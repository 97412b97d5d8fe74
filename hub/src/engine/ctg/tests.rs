//! Hand-computed synthetic cases, a batch reference for the incremental
//! figures, invariance under re-packing and redelivery (proptest), and the
//! real CTU-UHB recordings the simulator carries.

use super::*;
use proptest::prelude::*;

/// 2026-11-30 in UTC; any instant would do.
const T0: UnixMillis = UnixMillis(1_796_000_000_000);
/// Slots per minute.
const MIN: u64 = 240;
/// Slots per epoch.
const EP: u64 = EPOCH_SAMPLES as u64;

fn at(slot: u64) -> UnixMillis {
    UnixMillis(T0.0 + slot as i64 * SAMPLE_MS)
}

/// Feeds slots `from..to` as a monitor does, in 10 s packs, and advances to
/// the last sample of each pack, as the engine would before reading the
/// status.
fn feed(s: &mut CtgSession, from: u64, to: u64, fhr: impl Fn(u64) -> Option<f64>) {
    let mut slot = from;
    while slot < to {
        let end = (slot + 40).min(to);
        for k in slot..end {
            if let Some(v) = fhr(k) {
                s.push_fhr(at(k), v);
            }
        }
        s.advance_to(at(end - 1));
        slot = end;
    }
}

/// FHR that alternates between `hi` and `lo` bpm from one epoch to the next.
fn alternating(hi: f64, lo: f64) -> impl Fn(u64) -> Option<f64> {
    move |k| Some(if (k / EP).is_multiple_of(2) { hi } else { lo })
}

/// The STV of epochs alternating between two rates: every difference is
/// the same, so STV is that difference.
fn alternating_stv(hi: f64, lo: f64) -> f64 {
    60_000.0 / lo - 60_000.0 / hi
}

#[test]
fn constant_140_has_baseline_140_and_no_variability() {
    let mut s = CtgSession::new(T0);
    feed(&mut s, 0, 4 * MIN, |_| Some(140.0));
    s.advance_to(at(4 * MIN));
    // 4 min of signal: less than 5 min valid in the window, no baseline yet.
    assert_eq!(s.status().baseline_bpm, None);
    feed(&mut s, 4 * MIN, 5 * MIN, |_| Some(140.0));
    s.advance_to(at(5 * MIN));
    let st = s.status();
    assert_eq!(st.baseline_bpm, Some(140.0));
    assert!(!st.baseline_window_complete);

    feed(&mut s, 5 * MIN, 20 * MIN, |_| Some(140.0));
    s.advance_to(at(20 * MIN));
    let st = s.status();
    assert_eq!(st.baseline_bpm, Some(140.0));
    assert!(st.baseline_window_complete);
    assert_eq!(st.elapsed_ms, 20 * UnixMillis::MINUTE);
    assert_eq!(st.expected_samples, 20 * MIN);
    assert_eq!(st.received_samples, 20 * MIN);
    assert_eq!(st.signal_loss_pct, 0.0);
    assert_eq!(st.valid_minutes, 20);
    assert_eq!(st.stv_minutes, 20);
    assert_eq!(st.stv_ms, Some(0.0));
    assert_eq!(st.last_minute_amplitude_bpm, Some(0.0));
    assert_eq!(st.low_amplitude_minutes, 20);
    assert_eq!(
        (st.accelerations, st.decelerations, st.long_decelerations),
        (0, 0, 0)
    );
    assert_eq!(st.current_deceleration, None);

    let sum = s.summary();
    assert_eq!(sum.baseline_bpm, Some(140.0));
    assert_eq!(sum.duration_ms, 20 * UnixMillis::MINUTE);
    assert_eq!(sum.end, at(20 * MIN - 1));
    assert_eq!(sum.longest_low_amplitude_minutes, 20);
    assert_eq!(
        (sum.max_fhr_bpm, sum.min_fhr_bpm),
        (Some(140.0), Some(140.0))
    );
}

#[test]
fn alternating_epochs_give_the_pulse_interval_difference_as_stv() {
    // 140 bpm = 428.571… ms, 138 bpm = 434.782… ms: every successive epoch
    // differs by 6.2112 ms, so every minute's mean difference, and STV, is
    // exactly that.
    let expected = alternating_stv(140.0, 138.0);
    assert!((expected - 6.211_180_124).abs() < 1e-6, "{expected}");
    let mut s = CtgSession::new(T0);
    feed(&mut s, 0, 15 * MIN, alternating(140.0, 138.0));
    s.advance_to(at(15 * MIN));
    let st = s.status();
    let stv = st.stv_ms.expect("stv");
    assert!((stv - expected).abs() < 1e-9, "{stv} vs {expected}");
    assert_eq!(st.stv_minutes, 15);
    // 80 epochs of each in the window: the mean is 139.
    assert_eq!(st.baseline_bpm, Some(139.0));
    // A 2 bpm band is low amplitude: the run grows.
    assert_eq!(st.last_minute_amplitude_bpm, Some(2.0));
    assert_eq!(st.low_amplitude_minutes, 15);
}

#[test]
fn a_missing_epoch_breaks_the_chain_of_differences() {
    // Epochs cycle through 140, 138 and 136 bpm, and epoch 5 of every
    // minute is lost: the pairs (4, 5) and (5, 6) are gone, and (4, 6),
    // 7.5 s apart, must not stand in for them.
    let rate = |e: u64| [140.0, 138.0, 136.0][(e % 3) as usize];
    let fhr = move |k: u64| (k / EP % 16 != 5).then(|| rate(k / EP));
    let mut s = CtgSession::new(T0);
    feed(&mut s, 0, 3 * MIN, fhr);
    s.advance_to(at(3 * MIN));
    // Hand computation per minute: pairs (e, e+1) for e in 0..15, skipping
    // those touching epoch 5.
    let pi = |e: u64| 60_000.0 / rate(e);
    let mut total = 0.0;
    for m in 0..3u64 {
        let (mut sum, mut n) = (0.0, 0);
        for i in 0..15u64 {
            if i == 4 || i == 5 {
                continue;
            }
            let e = m * 16 + i;
            sum += (pi(e + 1) - pi(e)).abs();
            n += 1;
        }
        assert_eq!(n, 13);
        total += sum / n as f64;
    }
    let stv = s.status().stv_ms.expect("stv");
    assert!((stv - total / 3.0).abs() < 1e-9, "{stv} vs {}", total / 3.0);
    // One epoch of 16 lost per minute.
    assert!((s.status().signal_loss_pct - 100.0 / 16.0).abs() < 1e-12);
}

#[test]
fn tachycardia_175_gives_baseline_175() {
    let mut s = CtgSession::new(T0);
    feed(&mut s, 0, 12 * MIN, |k| Some(175.0 + (k % 3) as f64 * 0.25));
    s.advance_to(at(12 * MIN));
    let st = s.status();
    let b = st.baseline_bpm.expect("baseline");
    assert!((b - 175.25).abs() < 1e-9, "{b}");
    assert!(st.baseline_window_complete);
    let sb = s.summary().baseline_bpm.expect("session baseline");
    assert!((sb - 175.25).abs() < 1e-9, "{sb}");
}

#[test]
fn a_4_min_drop_is_one_long_deceleration_seen_before_it_ends() {
    // 12 min alternating 140/138 (baseline 139), 4 min alternating 110/108,
    // then 6 min back at 140/138.
    let start = 12 * MIN;
    let end = 16 * MIN;
    let fhr = move |k: u64| {
        let (hi, lo) = if (start..end).contains(&k) {
            (110.0, 108.0)
        } else {
            (140.0, 138.0)
        };
        alternating(hi, lo)(k)
    };
    let mut s = CtgSession::new(T0);
    feed(&mut s, 0, start, fhr);
    s.advance_to(at(start));
    assert_eq!(s.status().baseline_bpm, Some(139.0));

    // 2 min in: an ongoing deceleration, not yet long.
    feed(&mut s, start, start + 2 * MIN, fhr);
    s.advance_to(at(start + 2 * MIN));
    let d = s.status().current_deceleration.expect("ongoing");
    assert_eq!(d.start, at(start));
    assert_eq!(d.duration_ms, 2 * UnixMillis::MINUTE);
    assert_eq!(
        (d.baseline_bpm, d.nadir_bpm, d.depth_bpm),
        (139.0, 108.0, 31.0)
    );

    // One epoch short of 3 min: still below the rule's threshold.
    let almost = start + 48 * 15 - EP;
    feed(&mut s, start + 2 * MIN, almost, fhr);
    s.advance_to(at(almost));
    let d = s.status().current_deceleration.expect("ongoing");
    assert!(d.duration_ms < LONG_DECELERATION_MS, "{}", d.duration_ms);
    // 3 min: long, while it is still going on.
    feed(&mut s, almost, almost + EP, fhr);
    s.advance_to(at(almost + EP));
    let st = s.status();
    let d = st.current_deceleration.expect("ongoing");
    assert_eq!(d.duration_ms, LONG_DECELERATION_MS);
    assert_eq!((st.decelerations, st.long_decelerations), (0, 0));
    // The baseline ignores the deceleration's epochs.
    assert_eq!(st.baseline_bpm, Some(139.0));

    feed(&mut s, almost + EP, end + 6 * MIN, fhr);
    s.advance_to(at(end + 6 * MIN));
    let st = s.status();
    assert_eq!(st.current_deceleration, None);
    assert_eq!((st.decelerations, st.long_decelerations), (1, 1));
    assert_eq!(st.accelerations, 0);
    let d = st.last_deceleration.expect("finished");
    assert_eq!(
        (d.start, d.duration_ms),
        (at(start), 4 * UnixMillis::MINUTE)
    );
    assert_eq!(st.baseline_bpm, Some(139.0));
    // The minutes of the deceleration (110/108 differ by 10.1 ms) are left
    // out of STV: it stays that of 140/138 exactly.
    let stv = st.stv_ms.expect("stv");
    assert!((stv - alternating_stv(140.0, 138.0)).abs() < 1e-9, "{stv}");
    // 22 valid minutes; 4 in the deceleration and the one with its
    // recovery epochs are not in STV.
    assert_eq!((st.valid_minutes, st.stv_minutes), (22, 17));
    let sum = s.summary();
    assert_eq!((sum.decelerations, sum.long_decelerations), (1, 1));
    assert_eq!(sum.longest_deceleration_ms, 4 * UnixMillis::MINUTE);
    assert!((sum.baseline_bpm.expect("baseline") - 139.0).abs() < 1e-9);
}

#[test]
fn a_20_s_drop_counts_a_10_s_drop_does_not() {
    let drop = |from: u64, len: u64| {
        move |k: u64| {
            Some(if (from..from + len).contains(&k) {
                110.0
            } else {
                140.0
            })
        }
    };
    // 10 s = 40 samples: epochs 192, 193 and two thirds of 194 are low,
    // 3 epochs = 11.25 s < 15 s.
    let mut s = CtgSession::new(T0);
    feed(&mut s, 0, 14 * MIN, drop(12 * MIN, 40));
    s.advance_to(at(14 * MIN));
    let st = s.status();
    assert_eq!(st.decelerations, 0);
    assert_eq!(st.last_deceleration, None);

    // 20 s = 80 samples: 5 whole epochs below (the sixth is one third low,
    // mean 130 > 124), 18.75 s.
    let mut s = CtgSession::new(T0);
    feed(&mut s, 0, 14 * MIN, drop(12 * MIN, 80));
    s.advance_to(at(14 * MIN));
    let st = s.status();
    assert_eq!((st.decelerations, st.long_decelerations), (1, 0));
    let d = st.last_deceleration.expect("deceleration");
    assert_eq!(d.duration_ms, 5 * EPOCH_MS);
    assert_eq!((d.nadir_bpm, d.depth_bpm), (110.0, 30.0));
    // The window (epochs 64–223) holds 154 epochs at 140, the 5 low ones
    // (excluded) and the edge epoch, one third low at mean 130, which is
    // within 15 bpm of the median and stays in.
    let b = st.baseline_bpm.expect("baseline");
    assert!((b - (154.0 * 140.0 + 130.0) / 155.0).abs() < 1e-9, "{b}");
}

#[test]
fn a_drop_after_loss_is_measured_against_the_last_baseline() {
    // 10 min at 140, 6 min of loss (the window falls below 5 min of valid
    // signal at minute 16: no baseline), then 4 min at 100: a long
    // deceleration against the last baseline, 140, computed 1 min earlier.
    let fhr = |k: u64| match k / MIN {
        0..10 => Some(140.0),
        10..16 => None,
        _ => Some(100.0),
    };
    let mut s = CtgSession::new(T0);
    feed(&mut s, 0, 16 * MIN, fhr);
    s.advance_to(at(16 * MIN));
    assert_eq!(s.status().baseline_bpm, None);
    feed(&mut s, 16 * MIN, 20 * MIN, fhr);
    s.advance_to(at(20 * MIN));
    let d = s.status().current_deceleration.expect("deceleration");
    assert_eq!(
        (d.start, d.baseline_bpm, d.depth_bpm),
        (at(16 * MIN), 140.0, 40.0)
    );
    assert!(d.duration_ms >= LONG_DECELERATION_MS);

    // After more than 10 min without a baseline, nothing is compared.
    let fhr = |k: u64| match k / MIN {
        0..10 => Some(140.0),
        10..26 => None,
        _ => Some(100.0),
    };
    let mut s = CtgSession::new(T0);
    feed(&mut s, 0, 30 * MIN, fhr);
    s.advance_to(at(30 * MIN));
    assert_eq!(s.status().current_deceleration, None);
}

#[test]
fn a_lasting_new_level_becomes_the_baseline() {
    // 12 min at 140, then 120 for good. At minute 16 half the window is at
    // 120: the median is 130 and so is the baseline; 120 is no longer
    // 15 below it, so the deceleration ends after 5 min (epochs 192–271)
    // instead of running on.
    let fhr = |k: u64| Some(if k < 12 * MIN { 140.0 } else { 120.0 });
    let mut s = CtgSession::new(T0);
    feed(&mut s, 0, 30 * MIN, fhr);
    s.advance_to(at(30 * MIN));
    let st = s.status();
    assert_eq!(st.current_deceleration, None);
    assert_eq!((st.decelerations, st.long_decelerations), (1, 1));
    let d = st.last_deceleration.expect("deceleration");
    assert_eq!(
        (d.start, d.duration_ms),
        (at(12 * MIN), 5 * UnixMillis::MINUTE)
    );
    assert_eq!(st.baseline_bpm, Some(120.0));
    // STV counts minutes again once the deceleration is over: minutes
    // 12–16 and 17 (with the two recovery epochs) are out.
    assert_eq!(st.stv_minutes, 30 - 6);
}

#[test]
fn a_one_epoch_blip_does_not_split_a_deceleration() {
    // 2 min at 110 with one epoch back at 140 in the middle: one
    // deceleration of 2 min (it takes two epochs back to end one).
    let start = 12 * MIN;
    let blip = start + MIN;
    let fhr = move |k: u64| {
        let low = (start..start + 2 * MIN).contains(&k) && !(blip..blip + EP).contains(&k);
        Some(if low { 110.0 } else { 140.0 })
    };
    let mut s = CtgSession::new(T0);
    feed(&mut s, 0, 16 * MIN, fhr);
    s.advance_to(at(16 * MIN));
    let st = s.status();
    assert_eq!(st.decelerations, 1);
    let d = st.last_deceleration.expect("deceleration");
    assert_eq!(
        (d.start, d.duration_ms),
        (at(start), 2 * UnixMillis::MINUTE)
    );
}

#[test]
fn a_20_s_rise_is_an_acceleration() {
    let mut s = CtgSession::new(T0);
    feed(&mut s, 0, 14 * MIN, |k| {
        Some(if (12 * MIN..12 * MIN + 80).contains(&k) {
            165.0
        } else {
            140.0
        })
    });
    s.advance_to(at(14 * MIN));
    let st = s.status();
    assert_eq!((st.accelerations, st.decelerations), (1, 0));
    // As for the drop: the edge epoch (mean 148.33) stays in the baseline.
    let edge = (5.0 * 165.0 + 10.0 * 140.0) / 15.0;
    let b = st.baseline_bpm.expect("baseline");
    assert!((b - (154.0 * 140.0 + edge) / 155.0).abs() < 1e-9, "{b}");
}

#[test]
fn a_quarter_of_samples_missing_is_25_pct_loss() {
    // Every fourth sample lost: each epoch keeps 11 or 12 of 15, all valid.
    let mut s = CtgSession::new(T0);
    feed(&mut s, 0, 12 * MIN, |k| (k % 4 != 3).then_some(140.0));
    s.advance_to(at(12 * MIN));
    let st = s.status();
    assert_eq!(st.expected_samples, 12 * MIN);
    assert_eq!(st.received_samples, 9 * MIN);
    assert_eq!(st.signal_loss_pct, 25.0);
    assert_eq!(st.valid_minutes, 12);
    assert_eq!(st.baseline_bpm, Some(140.0));

    // The same share as one 15 s dropout a minute: 12 of 16 epochs valid,
    // so the minutes still count.
    let mut s = CtgSession::new(T0);
    feed(&mut s, 0, 12 * MIN, |k| (k % MIN >= 60).then_some(140.0));
    s.advance_to(at(12 * MIN));
    let st = s.status();
    assert_eq!(st.signal_loss_pct, 25.0);
    assert_eq!(st.valid_minutes, 12);
    assert_eq!(s.summary().signal_loss_pct, 25.0);
}

#[test]
fn no_signal_at_all_is_total_loss() {
    let mut s = CtgSession::new(T0);
    s.advance_to(at(12 * MIN));
    let st = s.status();
    assert_eq!(st.expected_samples, 12 * MIN);
    assert_eq!(st.signal_loss_pct, 100.0);
    assert_eq!(
        (st.baseline_bpm, st.stv_ms, st.valid_minutes),
        (None, None, 0)
    );
    let sum = s.summary();
    assert_eq!(sum.signal_loss_pct, 100.0);
    assert_eq!(sum.duration_ms, 12 * UnixMillis::MINUTE);
    assert_eq!((sum.max_fhr_bpm, sum.baseline_bpm), (None, None));
}

#[test]
fn out_of_range_samples_are_loss() {
    let mut s = CtgSession::new(T0);
    for k in 0..MIN {
        let v = match k % 6 {
            0 => 49.75,
            1 => 240.25,
            2 => f64::NAN,
            3 => f64::INFINITY,
            _ => 140.0,
        };
        s.push_fhr(at(k), v);
        // A good sample for a slot that had a bad one still counts.
        if k % 6 == 0 {
            s.push_fhr(at(k), 141.0);
        }
    }
    s.advance_to(at(MIN));
    let st = s.status();
    assert_eq!(st.received_samples, MIN / 2);
    assert_eq!(st.signal_loss_pct, 50.0);
    assert_eq!(s.summary().max_fhr_bpm, Some(141.0));
}

#[test]
fn redelivered_and_late_samples_change_nothing() {
    let fhr = alternating(141.0, 137.5);
    let mut once = CtgSession::new(T0);
    feed(&mut once, 0, 3 * MIN, &fhr);
    let mut twice = CtgSession::new(T0);
    for pack in 0..(3 * MIN / 40) {
        let slots = pack * 40..pack * 40 + 40;
        for _ in 0..2 {
            for k in slots.clone() {
                twice.push_fhr(at(k), fhr(k).expect("fhr"));
            }
        }
        twice.advance_to(at(slots.end - 1));
        // Redelivery of an older pack, long closed.
        if pack >= 2 {
            for k in (pack - 2) * 40..(pack - 1) * 40 {
                twice.push_fhr(at(k), 60.0);
            }
        }
    }
    once.advance_to(at(3 * MIN));
    twice.advance_to(at(3 * MIN));
    assert_eq!(once.status(), twice.status());
    assert_eq!(once.summary(), twice.summary());

    // A second sample for a filled slot (another value, within the jitter
    // tolerance) is ignored: the first one stays.
    let mut s = CtgSession::new(T0);
    for k in 0..MIN {
        s.push_fhr(at(k), 140.0);
        s.push_fhr(UnixMillis(at(k).0 + 20), 200.0);
    }
    s.advance_to(at(MIN));
    assert_eq!(s.summary().max_fhr_bpm, Some(140.0));
    assert_eq!(s.status().last_minute_amplitude_bpm, Some(0.0));

    // A sample for a slot of a closed epoch is dropped, and its slot stays
    // lost.
    let mut s = CtgSession::new(T0);
    feed(&mut s, 0, MIN, |k| (k != 100).then_some(140.0));
    s.advance_to(at(MIN));
    s.push_fhr(at(100), 140.0);
    s.advance_to(at(MIN));
    assert_eq!(s.status().received_samples, MIN - 1);
}

#[test]
fn samples_out_of_order_within_15_s_are_kept() {
    // Each 10 s pack sent backwards: its samples span at most 4 epochs.
    let mut s = CtgSession::new(T0);
    for pack in 0..(2 * MIN / 40) {
        for k in (pack * 40..pack * 40 + 40).rev() {
            s.push_fhr(at(k), 140.0);
        }
    }
    s.advance_to(at(2 * MIN));
    assert_eq!(s.status().signal_loss_pct, 0.0);
}

#[test]
fn jitter_changes_nothing() {
    let fhr = alternating(140.0, 136.0);
    let mut exact = CtgSession::new(T0);
    let mut jittered = CtgSession::new(T0);
    for k in 0..12 * MIN {
        let v = fhr(k).expect("fhr");
        exact.push_fhr(at(k), v);
        let j = [0, 37, -51, 12, -60, 60, 5][(k % 7) as usize];
        jittered.push_fhr(UnixMillis(at(k).0 + j), v);
    }
    exact.advance_to(at(12 * MIN));
    jittered.advance_to(at(12 * MIN));
    assert_eq!(exact.status(), jittered.status());
    assert_eq!(exact.status().signal_loss_pct, 0.0);
}

#[test]
fn the_grid_follows_the_device_not_the_start_event() {
    // The start event came 100 ms before the device's grid, and samples
    // jitter by ±40 ms: on the event's grid they would lie 60 and 140 ms
    // after a slot, on either side of the rounding boundary, and every
    // other sample would collide with its neighbour (50 % loss); the grid
    // is set by the first sample instead.
    let start = UnixMillis(T0.0 - 100);
    let mut s = CtgSession::new(start);
    for k in 0..12 * MIN {
        let j = if k % 2 == 0 { -40 } else { 40 };
        s.push_fhr(UnixMillis(at(k).0 + j), 140.0);
    }
    s.advance_to(at(12 * MIN));
    let st = s.status();
    assert_eq!(st.signal_loss_pct, 0.0);
    assert_eq!(st.baseline_bpm, Some(140.0));
    // Samples before the start belong to no session.
    let mut s = CtgSession::new(T0);
    s.push_fhr(UnixMillis(T0.0 - 1_000), 140.0);
    assert_eq!(s.last_data(), None);
}

#[test]
fn a_long_silence_is_skipped_exactly() {
    // 12 min of signal with a deceleration running into a silence, then
    // 12 min more: advancing epoch by epoch and in one jump agree. The
    // silences are longer than both rolling windows (3 h), longer than the
    // loss window only (25 min: the STV window keeps minutes from before
    // it), and one that begins with a trickle of single samples (invalid
    // epochs that still count as received in the loss window).
    for (gap, trickle) in [(3 * 60 * MIN, false), (25 * MIN, false), (25 * MIN, true)] {
        let gap_end = 12 * MIN + gap;
        let fhr = move |k: u64| {
            if k < 11 * MIN {
                alternating(140.0, 137.0)(k)
            } else if k < 12 * MIN {
                Some(105.0)
            } else if k < gap_end {
                (trickle && k < 24 * MIN && k.is_multiple_of(37)).then_some(140.0)
            } else {
                alternating(150.0, 146.0)(k)
            }
        };
        let silent_from = if trickle { 24 * MIN } else { 12 * MIN };
        let mut stepped = CtgSession::new(T0);
        let mut jumped = CtgSession::new(T0);
        feed(&mut stepped, 0, silent_from, fhr);
        feed(&mut jumped, 0, silent_from, fhr);
        let mut k = silent_from;
        while k <= gap_end {
            stepped.advance_to(at(k));
            k += EP;
        }
        jumped.advance_to(at(gap_end));
        assert_eq!(stepped.status(), jumped.status(), "gap {gap}");
        // Minute by minute after the gap (a stale epoch left in a window by
        // the skip would show while the window refills).
        for m in 0..12 {
            let (from, to) = (gap_end + m * MIN, gap_end + (m + 1) * MIN);
            feed(&mut stepped, from, to, fhr);
            feed(&mut jumped, from, to, fhr);
            stepped.advance_to(at(to));
            jumped.advance_to(at(to));
            assert_eq!(
                stepped.status(),
                jumped.status(),
                "gap {gap}: minute {m} after it"
            );
        }
        assert_eq!(stepped.summary(), jumped.summary());
        let st = jumped.status();
        // The deceleration ended 1 min into the silence; it counted.
        assert_eq!(st.decelerations, 1);
        assert_eq!(st.baseline_bpm, Some(148.0));
        // 10 min of signal after it: the loss window has forgotten the gap.
        assert_eq!(st.window_signal_loss_pct, 0.0);
        // The STV window holds the last 60 min: with the short gap, the 11
        // minutes of 140/137 before it are still there.
        let (before, after) = (alternating_stv(140.0, 137.0), alternating_stv(150.0, 146.0));
        if gap == 25 * MIN {
            // Minutes 0–10 of the first part (the minute of the drop is in
            // a deceleration, so not counted) and the 12 after the gap: the
            // window reaches back to minute -11.
            let w = st.window_stv_ms.expect("window stv");
            let n = st.window_stv_minutes;
            assert_eq!(n, 11 + 12, "gap {gap}");
            let want = (11.0 * before + 12.0 * after) / f64::from(n);
            assert!((w - want).abs() < 1e-5, "{w} vs {want}");
        } else {
            assert_eq!(st.window_stv_minutes, 12);
            let w = st.window_stv_ms.expect("window stv");
            assert!((w - after).abs() < 1e-5, "{w} vs {after}");
        }
    }
    // And a clock a century ahead costs nothing (silence is skipped whole).
    let mut s = CtgSession::new(T0);
    feed(&mut s, 0, 12 * MIN, alternating(140.0, 137.0));
    s.advance_to(UnixMillis(T0.0 + 100 * 365 * UnixMillis::DAY));
    let st = s.status();
    assert_eq!(st.expected_samples, 100 * 365 * 24 * 60 * MIN);
    assert!(st.signal_loss_pct > 99.999);
    assert_eq!(st.window_signal_loss_pct, 100.0);
    assert_eq!((st.window_stv_ms, st.window_stv_minutes), (None, 0));
}

#[test]
fn signal_loss_is_also_measured_over_the_last_10_min() {
    // 50 good minutes, then 10 min without FHR: the session's share creeps
    // up to 10/60, the last 10 min's goes to 100 %.
    let fhr = |k: u64| (!(50 * MIN..60 * MIN).contains(&k)).then_some(140.0);
    let mut s = CtgSession::new(T0);
    feed(&mut s, 0, 50 * MIN, fhr);
    s.advance_to(at(50 * MIN));
    let st = s.status();
    assert_eq!((st.signal_loss_pct, st.window_signal_loss_pct), (0.0, 0.0));
    // 2 min in: 32 of the window's 160 epochs lost, 20 % exactly.
    s.advance_to(at(52 * MIN));
    let st = s.status();
    assert_eq!(st.window_signal_loss_pct, 20.0);
    assert!((st.signal_loss_pct - 100.0 * 2.0 / 52.0).abs() < 1e-12);
    // One epoch more: 33 of 160.
    s.advance_to(at(52 * MIN + EP));
    assert_eq!(s.status().window_signal_loss_pct, 100.0 * 33.0 / 160.0);
    s.advance_to(at(60 * MIN));
    let st = s.status();
    assert_eq!(st.window_signal_loss_pct, 100.0);
    assert!((st.signal_loss_pct - 100.0 * 10.0 / 60.0).abs() < 1e-12);
    // Signal again: the dropout slides out of the window, an epoch at a time.
    feed(&mut s, 60 * MIN, 69 * MIN, fhr);
    s.advance_to(at(69 * MIN));
    assert_eq!(s.status().window_signal_loss_pct, 10.0);
    feed(&mut s, 69 * MIN, 70 * MIN, fhr);
    s.advance_to(at(70 * MIN));
    let st = s.status();
    assert_eq!(st.window_signal_loss_pct, 0.0);
    assert_eq!(st.expected_samples - st.received_samples, 10 * MIN);

    // Before 10 min the window is what there is: 1 lost sample in 4.
    let mut s = CtgSession::new(T0);
    feed(&mut s, 0, 3 * MIN, |k| (k % 4 != 0).then_some(140.0));
    s.advance_to(at(3 * MIN));
    let st = s.status();
    assert_eq!(
        (st.signal_loss_pct, st.window_signal_loss_pct),
        (25.0, 25.0)
    );
}

/// Pulse intervals (ms) whose rates, `60 000 / ms`, convert back exactly,
/// so that STV comes out exact: 400 ms is 150 bpm.
fn bpm(pulse_ms: f64) -> f64 {
    let b = 60_000.0 / pulse_ms;
    assert_eq!(60_000.0 / b, pulse_ms, "{pulse_ms} ms does not round-trip");
    b
}

#[test]
fn stv_is_also_measured_over_the_last_60_min() {
    // 40 min with an STV of 6 ms (epochs alternating 400 / 406 ms), then
    // 2 ms (400 / 402 ms). Every per-minute value is exact.
    let (a, b, c) = (bpm(400.0), bpm(406.0), bpm(402.0));
    let fhr = move |k: u64| {
        let low = if k < 40 * MIN { b } else { c };
        Some(if (k / EP).is_multiple_of(2) { a } else { low })
    };
    let mut s = CtgSession::new(T0);
    feed(&mut s, 0, 60 * MIN, fhr);
    s.advance_to(at(60 * MIN));
    let st = s.status();
    // Up to 60 min the window is the session.
    assert_eq!((st.stv_minutes, st.window_stv_minutes), (60, 60));
    let want = (40.0 * 6.0 + 20.0 * 2.0) / 60.0;
    assert_eq!(st.window_stv_ms, Some(want));
    assert!((st.stv_ms.expect("stv") - want).abs() < 1e-12);
    // At 90 min the window (minutes 30–89) holds 10 minutes of 6 ms and 50
    // of 2 ms; the session still averages all 90.
    feed(&mut s, 60 * MIN, 90 * MIN, fhr);
    s.advance_to(at(90 * MIN));
    let st = s.status();
    assert_eq!((st.stv_minutes, st.window_stv_minutes), (90, 60));
    assert_eq!(st.window_stv_ms, Some((10.0 * 6.0 + 50.0 * 2.0) / 60.0));
    let session = st.stv_ms.expect("stv");
    assert!((session - (40.0 * 6.0 + 50.0 * 2.0) / 90.0).abs() < 1e-12);
    // At 100 min only the 2 ms minutes are left in the window.
    feed(&mut s, 90 * MIN, 100 * MIN, fhr);
    s.advance_to(at(100 * MIN));
    assert_eq!(s.status().window_stv_ms, Some(2.0));
}

#[test]
fn the_plan_sets_what_a_deceleration_and_low_amplitude_are() {
    // 12 min at 140 (baseline 140 exactly), then 4 min `drop` bpm lower.
    let run = |limits: CtgLimits, drop: f64| {
        let fhr = move |k: u64| {
            Some(if (12 * MIN..16 * MIN).contains(&k) {
                140.0 - drop
            } else {
                140.0
            })
        };
        let mut s = CtgSession::with_limits(T0, limits);
        feed(&mut s, 0, 20 * MIN, fhr);
        s.advance_to(at(20 * MIN));
        s.status()
    };
    let figo = CtgLimits::default();
    // 14 bpm below is no deceleration (and, within the ±15 bpm band, it
    // soon drags the baseline down with it); 15 is one, of 4 min.
    let st = run(figo, 14.0);
    assert_eq!((st.decelerations, st.last_deceleration), (0, None));
    let st = run(figo, 15.0);
    assert_eq!((st.decelerations, st.long_decelerations), (1, 1));
    let d = st.last_deceleration.expect("deceleration");
    assert_eq!((d.duration_ms, d.depth_bpm), (4 * UnixMillis::MINUTE, 15.0));
    // A plan that asks for 20 bpm: 15 is not one any more, 20 is.
    let deep = CtgLimits {
        deceleration_bpm: 20.0,
        ..figo
    };
    assert_eq!(run(deep, 15.0).decelerations, 0);
    assert_eq!(run(deep, 20.0).long_decelerations, 1);
    // A plan whose "long" is 5 min: the 4-min one is counted, not long.
    let five = CtgLimits {
        long_deceleration_ms: 5 * UnixMillis::MINUTE,
        ..figo
    };
    let st = run(five, 20.0);
    assert_eq!((st.decelerations, st.long_decelerations), (1, 0));

    // Amplitude: epochs alternating 140 and 140 − `band` bpm span `band`
    // in every minute.
    let amplitude = |limits: CtgLimits, band: f64| {
        let mut s = CtgSession::with_limits(T0, limits);
        feed(&mut s, 0, 10 * MIN, alternating(140.0, 140.0 - band));
        s.advance_to(at(10 * MIN));
        s.status().low_amplitude_minutes
    };
    assert_eq!(amplitude(figo, 4.75), 10);
    assert_eq!(amplitude(figo, 5.0), 0, "5 bpm is not below 5");
    let three = CtgLimits {
        low_amplitude_bpm: 3.0,
        ..figo
    };
    assert_eq!(amplitude(three, 4.75), 0);
    assert_eq!(amplitude(three, 2.75), 10);
}

#[test]
fn a_summary_at_a_time_leaves_the_session_open() {
    // The idle timeout summarises a copy; a late pack that continues the
    // session then finds every epoch still open, as if nothing happened.
    let fhr = |k: u64| Some(140.0 + (k % 7) as f64);
    let mut summarised = CtgSession::new(T0);
    let mut untouched = CtgSession::new(T0);
    feed(&mut summarised, 0, 12 * MIN, fhr);
    feed(&mut untouched, 0, 12 * MIN, fhr);
    let early = summarised.summary_at(at(12 * MIN + 5 * MIN));
    let mut closed = untouched.clone();
    closed.advance_to(at(17 * MIN));
    assert_eq!(early, closed.summary());
    assert_eq!(early.duration_ms, 12 * UnixMillis::MINUTE);
    feed(&mut summarised, 12 * MIN, 20 * MIN, fhr);
    feed(&mut untouched, 12 * MIN, 20 * MIN, fhr);
    assert_eq!(summarised.status(), untouched.status());
    assert_eq!(summarised.summary(), untouched.summary());
    // Everything but the last epoch, still open, is analysed.
    assert_eq!(summarised.status().received_samples + EP, 20 * MIN);
}

#[test]
fn contractions_are_counted() {
    // Resting tone 10 %, a 60 s contraction to 50 % every 3 min for 30 min.
    let mut s = CtgSession::new(T0);
    for k in 0..30 * MIN {
        let phase = k % (3 * MIN);
        let toco = if phase < MIN {
            10.0 + 40.0 * (std::f64::consts::PI * phase as f64 / MIN as f64).sin()
        } else {
            10.0
        };
        s.push_toco(at(k), toco);
        s.push_fhr(at(k), 140.0);
    }
    s.advance_to(at(30 * MIN));
    assert_eq!(s.status().contractions, 10);
    assert_eq!(s.summary().contractions, 10);
}

#[test]
fn session_state_is_small_and_fixed() {
    // 5 064 bytes today: the 10-min window (1 280), the session histogram
    // (2 292), the open samples (720: FHR f64, toco f32), the rolling
    // windows of loss (80) and STV (240) and a few counters; no heap at all.
    // Budget: 5 KiB, so 1 000 concurrent sessions take 5 MB.
    let size = std::mem::size_of::<CtgSession>();
    println!("size_of::<CtgSession>() = {size} bytes");
    assert!(size <= 5 * 1024, "{size}");
}

// ---- A batch reference for the incremental figures ----

/// A tiny deterministic generator (no dependency, same numbers everywhere).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        (self.next() * n as f64) as u64
    }
}

/// One slot of a synthetic recording.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub fhr: Option<f64>,
    pub toco: f64,
    pub jitter_ms: i64,
}

/// A noisy trace around 135–145 bpm, quantised to 0.25 bpm like a monitor,
/// with bursts of loss; with `events`, also accelerations and
/// decelerations of 20 s to 4 min.
pub(crate) fn synthetic(seed: u64, slots: u64, events: bool) -> Vec<Sample> {
    let mut rng = Lcg(seed);
    let base = 135.0 + 10.0 * rng.next();
    let (mut loss_left, mut event_left, mut delta) = (0u64, 0u64, 0.0);
    (0..slots)
        .map(|k| {
            if loss_left == 0 && rng.next() < 1.0 / 800.0 {
                loss_left = 4 + rng.below(240);
            }
            if events && event_left == 0 && rng.next() < 1.0 / 1500.0 {
                event_left = 80 + rng.below(880);
                delta = if rng.next() < 0.6 { -30.0 } else { 25.0 };
            }
            let wander = 3.0 * (k as f64 * std::f64::consts::TAU / 400.0).sin();
            let noise = 6.0 * rng.next() - 3.0;
            let shift = if event_left > 0 { delta } else { 0.0 };
            event_left = event_left.saturating_sub(1);
            let lost = loss_left > 0 || rng.next() < 0.02;
            loss_left = loss_left.saturating_sub(1);
            let fhr = ((base + wander + noise + shift) * 4.0).round() / 4.0;
            Sample {
                fhr: (!lost).then_some(fhr),
                toco: 10.0 + 30.0 * (k as f64 * std::f64::consts::TAU / 720.0).sin().max(0.0),
                jitter_ms: (rng.below(121) as i64) - 60,
            }
        })
        .collect()
}

fn fhr_of(samples: &[Sample]) -> Vec<Option<f64>> {
    samples.iter().map(|s| s.fhr).collect()
}

/// Epoch means (FHR, pulse interval) by the module's definitions, in batch.
fn reference_epochs(fhr: &[Option<f64>]) -> Vec<Option<(f64, f64)>> {
    fhr.chunks_exact(EPOCH_SAMPLES)
        .map(|c| {
            let v: Vec<f64> = c.iter().flatten().copied().collect();
            (v.len() >= 8).then(|| {
                let n = v.len() as f64;
                (
                    v.iter().sum::<f64>() / n,
                    v.iter().map(|b| 60_000.0 / b).sum::<f64>() / n,
                )
            })
        })
        .collect()
}

/// STV in batch: per minute the mean |ΔPI| of adjacent valid epochs, then
/// the mean over valid minutes (inputs without decelerations).
fn reference_stv(fhr: &[Option<f64>]) -> Option<f64> {
    let epochs = reference_epochs(fhr);
    let per_minute: Vec<f64> = epochs
        .chunks_exact(16)
        .filter_map(|m| {
            let valid = m.iter().flatten().count();
            let diffs: Vec<f64> = m
                .windows(2)
                .filter_map(|w| Some((w[1]?.1 - w[0]?.1).abs()))
                .collect();
            (valid >= 8 && !diffs.is_empty())
                .then(|| diffs.iter().sum::<f64>() / diffs.len() as f64)
        })
        .collect();
    (!per_minute.is_empty()).then(|| per_minute.iter().sum::<f64>() / per_minute.len() as f64)
}

/// The 10-min baseline in batch, over the last 160 epochs of `fhr`.
fn reference_baseline(fhr: &[Option<f64>]) -> Option<f64> {
    let epochs = reference_epochs(fhr);
    let window: Vec<Option<f64>> = epochs
        .iter()
        .rev()
        .take(160)
        .rev()
        .map(|e| e.map(|(f, _)| f))
        .collect();
    let mut valid: Vec<f64> = window.iter().flatten().copied().collect();
    if valid.len() < 80 {
        return None;
    }
    valid.sort_by(f64::total_cmp);
    let n = valid.len();
    let median = if n % 2 == 1 {
        valid[n / 2]
    } else {
        (valid[n / 2 - 1] + valid[n / 2]) / 2.0
    };
    let band: Vec<f64> = window
        .iter()
        .flatten()
        .copied()
        .filter(|x| (x - median).abs() < 15.0)
        .collect();
    (band.len() * 2 >= n).then(|| band.iter().sum::<f64>() / band.len() as f64)
}

#[test]
fn incremental_figures_match_the_batch_reference() {
    for seed in [1, 2, 3, 42] {
        // 70 min, so that the rolling STV window (60 min) has moved on.
        let samples = synthetic(seed, 70 * MIN, false);
        let fhr = fhr_of(&samples);
        let mut s = CtgSession::new(T0);
        feed(&mut s, 0, 70 * MIN, |k| fhr[k as usize]);
        s.advance_to(at(70 * MIN));
        let st = s.status();
        assert_eq!(st.decelerations + st.accelerations, 0, "seed {seed}");
        let stv = st.stv_ms.expect("stv");
        let want = reference_stv(&fhr).expect("reference stv");
        assert!((stv - want).abs() < 1e-9, "seed {seed}: {stv} vs {want}");
        // The last 60 min (per-minute values kept as f32).
        let window = st.window_stv_ms.expect("window stv");
        let want = reference_stv(&fhr[10 * MIN as usize..]).expect("reference stv");
        assert!(
            (window - want).abs() < 1e-5,
            "seed {seed}: {window} vs {want}"
        );
        // Loss over the last 10 min (2 400 samples).
        let lost = fhr[60 * MIN as usize..]
            .iter()
            .filter(|f| f.is_none())
            .count();
        let want = 100.0 * lost as f64 / (10 * MIN) as f64;
        assert!(
            (st.window_signal_loss_pct - want).abs() < 1e-12,
            "seed {seed}"
        );
        let b = st.baseline_bpm.expect("baseline");
        let want = reference_baseline(&fhr).expect("reference baseline");
        assert!((b - want).abs() < 1e-9, "seed {seed}: {b} vs {want}");
        let received = fhr.iter().flatten().count() as u64;
        assert_eq!(st.received_samples, received, "seed {seed}");
    }
}

// ---- Re-packing and redelivery ----

fn push_sample(s: &mut CtgSession, k: usize, x: &Sample) {
    let t = UnixMillis(at(k as u64).0 + x.jitter_ms);
    if let Some(v) = x.fhr {
        s.push_fhr(t, v);
    }
    s.push_toco(t, x.toco);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Any split into packs, with samples and whole packs delivered again
    /// and the analysis advanced between packs or not, gives the same
    /// status and summary, bit for bit, as one in-order pass.
    #[test]
    fn packing_and_redelivery_change_nothing(
        seed in any::<u64>(),
        cuts in prop::collection::vec(1usize..100, 1..64),
        redeliver in prop::collection::vec((0usize..4, 1usize..6), 1..64),
        dup_every in 0usize..9,
        advance_between in any::<bool>(),
    ) {
        let n = 16 * MIN as usize;
        let samples = synthetic(seed, n as u64, true);
        let mut reference = CtgSession::new(T0);
        for (k, x) in samples.iter().enumerate() {
            push_sample(&mut reference, k, x);
        }
        reference.advance_to(at(n as u64));

        let mut packs = Vec::new();
        let mut from = 0;
        for i in 0.. {
            if from >= n { break; }
            let to = (from + cuts[i % cuts.len()]).min(n);
            packs.push(from..to);
            from = to;
        }
        let mut s = CtgSession::new(T0);
        for (i, pack) in packs.iter().enumerate() {
            for k in pack.clone() {
                push_sample(&mut s, k, &samples[k]);
                if dup_every > 0 && k % dup_every == 0 {
                    push_sample(&mut s, k, &samples[k]);
                }
            }
            // Sometimes a pack already delivered comes again.
            let (what, back) = redeliver[i % redeliver.len()];
            if what == 0 {
                for k in packs[i.saturating_sub(back)].clone() {
                    push_sample(&mut s, k, &samples[k]);
                }
            }
            if advance_between {
                // The engine advances to the newest sample it has.
                let last = pack.end - 1;
                s.advance_to(UnixMillis(at(last as u64).0 + samples[last].jitter_ms));
            }
        }
        s.advance_to(at(n as u64));
        prop_assert_eq!(reference.status(), s.status());
        prop_assert_eq!(reference.summary(), s.summary());
    }
}

// ---- Real recordings (CTU-UHB, see device-sim/data/ctu-uhb/README.md) ----

/// `(fhr, uc)` per 4 Hz sample; `None` where `fhr_bpm` is empty.
pub(crate) fn record(id: &str) -> Vec<(Option<f64>, f64)> {
    let path = format!(
        "{}/../device-sim/data/ctu-uhb/{id}.csv",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("CTU-UHB record");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("t_s,fhr_bpm,uc"));
    lines
        .enumerate()
        .map(|(k, line)| {
            let mut f = line.split(',');
            let (t, fhr, uc) = (
                f.next().expect("t_s"),
                f.next().expect("fhr_bpm"),
                f.next().expect("uc"),
            );
            let t: f64 = t.parse().expect("t_s");
            assert_eq!(t, k as f64 / 4.0, "4 Hz from 0");
            let fhr = (!fhr.is_empty()).then(|| fhr.parse::<f64>().expect("fhr_bpm"));
            (fhr, uc.parse().expect("uc"))
        })
        .collect()
}

struct Replay {
    status: CtgStatus,
    summary: CtgSummary,
    /// Of the 10 s reads after the first 10 min: the share with a baseline,
    /// and the share of those with a baseline in 110–160 bpm.
    baseline_known: f64,
    baseline_normal: f64,
    /// The range of those baselines.
    baseline_range: (f64, f64),
    /// Loss computed straight from the file (empty or outside 50–240).
    file_loss_pct: f64,
}

/// Replays a record as the simulator sends it (10 s packs; FHR outside
/// 50–240 left out as the gateway does; UC capped at 100 as toco) and reads
/// the status after every pack, as the engine would.
fn replay(id: &str) -> Replay {
    let rec = record(id);
    let n = rec.len() as u64;
    let mut s = CtgSession::new(T0);
    let (mut reads, mut known, mut normal) = (0u32, 0u32, 0u32);
    let mut range = (f64::INFINITY, f64::NEG_INFINITY);
    for pack in rec.chunks(40).enumerate() {
        let (p, samples) = pack;
        let first = p as u64 * 40;
        for (i, &(fhr, uc)) in samples.iter().enumerate() {
            let t = at(first + i as u64);
            if let Some(v) = fhr {
                s.push_fhr(t, v);
            }
            s.push_toco(t, uc.min(100.0));
        }
        s.advance_to(at(first + samples.len() as u64 - 1));
        let st = s.status();
        if st.baseline_window_complete {
            reads += 1;
            if let Some(b) = st.baseline_bpm {
                known += 1;
                range = (range.0.min(b), range.1.max(b));
                if (110.0..=160.0).contains(&b) {
                    normal += 1;
                }
            }
        }
    }
    s.advance_to(at(n));
    let lost = rec
        .iter()
        .filter(|(f, _)| !f.is_some_and(|v| (50.0..=240.0).contains(&v)))
        .count();
    Replay {
        status: s.status(),
        summary: s.summary(),
        baseline_known: f64::from(known) / f64::from(reads.max(1)),
        baseline_normal: f64::from(normal) / f64::from(known.max(1)),
        baseline_range: range,
        file_loss_pct: 100.0 * lost as f64 / n as f64,
    }
}

/// The figures of the four records, printed for the docs
/// (`cargo test -p vaka-hub --lib engine::ctg::tests::real -- --nocapture`).
///
/// These are intrapartum traces (the last hour before birth, much of it the
/// second stage, with contractions and decelerations), not the antepartum
/// home recordings Dawes-Redman norms are for: STV runs higher (1307's
/// first-stage minutes: 7–15 ms; 1028's pushing stage: 20–50 ms a minute),
/// and in decel-heavy windows fewer than half of the epochs lie near the
/// median, so the 10-min baseline is indeterminate (`None`) rather than
/// made up.
#[test]
fn real_recordings_give_sane_figures() {
    for id in ["1028", "1071", "1291", "1307"] {
        let r = replay(id);
        let (st, sum) = (&r.status, &r.summary);
        println!(
            "record {id}: loss {:.2} % (file {:.2} %); 10-min baseline known in {:.0} % of reads after 10 min, \
             in 110–160 bpm in {:.0} % of those (range {:.1}–{:.1}), at the end {:?}; session baseline {:?} bpm; \
             STV {:?} ms over {} of {} valid min; longest low-amplitude run {} min; \
             accelerations {}, decelerations {} (long {}, longest {} s); contractions {}; FHR {:?}–{:?}",
            st.signal_loss_pct,
            r.file_loss_pct,
            100.0 * r.baseline_known,
            100.0 * r.baseline_normal,
            r.baseline_range.0,
            r.baseline_range.1,
            st.baseline_bpm.map(|b| (b * 10.0).round() / 10.0),
            sum.baseline_bpm.map(|b| (b * 10.0).round() / 10.0),
            sum.stv_ms.map(|v| (v * 100.0).round() / 100.0),
            sum.stv_minutes,
            sum.valid_minutes,
            sum.longest_low_amplitude_minutes,
            sum.accelerations,
            sum.decelerations,
            sum.long_decelerations,
            sum.longest_deceleration_ms / 1000,
            sum.contractions,
            sum.min_fhr_bpm,
            sum.max_fhr_bpm,
        );
        println!("  summary: {}", serde_json::to_string(sum).expect("json"));

        // Loss is exactly what the file says, live and in the summary.
        assert_eq!(st.expected_samples, 14_400, "{id}");
        assert!((st.signal_loss_pct - r.file_loss_pct).abs() < 1e-9, "{id}");
        assert!((sum.signal_loss_pct - r.file_loss_pct).abs() < 1e-9, "{id}");
        assert_eq!(sum.duration_ms, UnixMillis::HOUR, "{id}");
        let stv = sum.stv_ms.expect("stv");
        assert!((2.0..=30.0).contains(&stv), "{id}: STV {stv}");
        let b = sum.baseline_bpm.expect("baseline");
        assert!((100.0..=170.0).contains(&b), "{id}: baseline {b}");
    }
    // 1028 (normal outcome, 0.93 % loss): a known baseline most of the
    // time, nearly always in 110–160.
    let r = replay("1028");
    assert!((r.status.signal_loss_pct - 0.93).abs() < 0.01);
    assert!(r.baseline_known >= 0.5, "{}", r.baseline_known);
    assert!(r.baseline_normal >= 0.75, "{}", r.baseline_normal);
    // 1291: 42.03 % empty plus 24 samples outside 50–240 (0.17 %).
    let r = replay("1291");
    assert!((r.status.signal_loss_pct - 42.2).abs() < 0.05);
    // 1307 (normal outcome): first stage for 50 min, baseline 115–135.
    let r = replay("1307");
    assert!(r.baseline_normal >= 0.9, "{}", r.baseline_normal);
    let stv = r.summary.stv_ms.expect("stv");
    assert!((5.0..=20.0).contains(&stv), "1307: STV {stv}");
}
