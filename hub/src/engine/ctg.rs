//! Incremental analysis of one CTG session: the fetal heart rate (FHR, 4 Hz)
//! and uterine activity (toco) of a home recording, turned into the figures
//! the fetal rules read (ARCHITECTURE §4: `fetal_baseline`,
//! `fetal_variability`, `fetal_deceleration`, `ctg_signal_loss`) and into the
//! summary stored when the session ends.
//!
//! # Shape
//!
//! [`CtgSession`] is pure: samples and data times in, figures out; no I/O, no
//! clock. It is allocated only while a session runs, or may still be
//! continued by late data (about 5 KB, fixed:
//! nothing grows with the length of the session; box it in the patient's
//! state, e.g. `Option<Box<CtgSession>>`). Every sample costs O(1) amortised;
//! history is never re-scanned.
//!
//! The signal is cut, as in the Dawes-Redman analysis, into a fixed grid:
//!
//! ```text
//! slot   = one 4 Hz sample (250 ms), slot 0 at the session start
//! epoch  = 15 slots = 3.75 s = 1/16 min    (the unit of every figure below)
//! minute = 16 epochs                       (STV, amplitude, valid minutes)
//! window = the last 160 epochs = 10 min    (the baseline)
//! ```
//!
//! Samples land in their slot in a small buffer of *open* epochs (the last
//! 15 s, so samples may come out of order within that span). An epoch is
//! *closed* when a later sample no longer fits in the buffer or when
//! [`CtgSession::advance_to`] passes its end; only then is it analysed, once,
//! in time order. A sample for a slot already filled is a redelivery and is
//! ignored; one for a closed epoch is dropped, and its slot stays a loss. So
//! the figures depend only on which samples reached their epoch before it
//! closed, not on how they were split into packs: the same samples give the
//! same numbers, bit for bit.
//!
//! # Definitions used
//!
//! - **Valid epoch**: at least 8 of its 15 samples (> 50 %) are present and in
//!   50–240 bpm. Its FHR is the mean of those samples and its *pulse
//!   interval* the mean of `60 000 / bpm` (ms), as in Dawes-Redman, where the
//!   epoch value is the mean pulse interval over 1/16 min.
//! - **Baseline** (FIGO 2015, Ayres-de-Campos et al.: the mean level of the
//!   FHR excluding accelerations and decelerations, estimated over 10 min):
//!   the median of the valid epoch means of the last 10 min is a provisional
//!   baseline; epochs deviating from it by ≥ 15 bpm (accelerations,
//!   decelerations, artefacts) are dropped and the rest averaged. It needs
//!   ≥ 80 valid epochs (≥ 50 % of the 10 min) and at least half of them in
//!   the ±15 bpm band, else it is `None`: a window dominated by
//!   decelerations has no stable level, and reporting the median of it
//!   would invent a bradycardia. Until 10 min have elapsed it is computed
//!   over what there is ([`CtgStatus::baseline_window_complete`] says so).
//!   It is recomputed at the end of every minute.
//!   *Simplification*: FIGO asks for "the most horizontal and least
//!   oscillatory segments"; the median band is the usual automated stand-in,
//!   and Dawes-Redman's own baseline (a filtered pulse-interval histogram
//!   mode) is not reproduced.
//! - **Short-term variation** (Dawes, Moulden & Redman, *J Perinat Med*
//!   1991;19:47–51; Pardey, Moulden & Redman, *Am J Obstet Gynecol*
//!   2002;186:1095–1103): per minute, the mean absolute difference between
//!   the pulse intervals of successive epochs; STV is the mean of those
//!   per-minute values over the session, excluding minutes that contain a
//!   deceleration. Here a difference is taken only between two *adjacent*
//!   valid epochs of the same minute (15 pairs in a clean minute): an
//!   invalid epoch breaks the chain instead of creating a 7.5 s difference.
//!   A minute counts if it is valid (≥ 8 valid epochs) and has at least one
//!   pair. Dawes-Redman criteria treat STV < 3 ms as abnormal (antepartum).
//!   STV is also kept over a rolling window, the last 60 min (the longest
//!   a Dawes-Redman analysis runs): the mean of the per-minute values of
//!   the minutes that count among the last 60, so that variability that
//!   falls late in a long session is not averaged away by the hours of good
//!   signal before it.
//! - **Amplitude** (FIGO's "variability" band): per valid minute, the range
//!   (max − min) of its epoch means. [`CtgStatus::low_amplitude_minutes`] is
//!   the current run of valid minutes with a range below the plan's
//!   [`CtgLimits::low_amplitude_bpm`] (FIGO: reduced variability when
//!   < 5 bpm for > 50 min). An invalid minute (signal loss)
//!   neither extends nor breaks the run, so a dropout cannot hide a flat
//!   trace. *Simplification*: epoch means smooth the band a little compared
//!   with sample-level maxima and minima; that is what makes artefact spikes
//!   harmless.
//! - **Decelerations and accelerations** (FIGO: a fall below / rise above the
//!   baseline of ≥ 15 bpm lasting ≥ 15 s; a deceleration lasting ≥ 3 min is
//!   *prolonged*, here "long"; for decelerations both figures are the
//!   plan's, [`CtgLimits`], 15 bpm and 3 min by default): a run of valid
//!   epochs whose mean is ≥ 15 bpm below (above) the baseline *in force
//!   when the run starts*: the current
//!   10-min baseline or, while that is `None` (loss, or a window full of
//!   decelerations), the last one computed, if it is less than 10 min old.
//!   That reference stays fixed, so a deceleration cannot pull its own
//!   reference down. The run ends when two valid epochs in a row are back
//!   inside the band, or after 16 epochs (1 min) without a valid epoch
//!   beyond it (loss during decelerations is common, and a short dropout is
//!   bridged). An epoch also counts as back when the *current* baseline no
//!   longer sees it as beyond: once a new level has filled most of the
//!   window it is the baseline (FIGO's baseline change), not an endless
//!   deceleration. Its duration runs from the start of its first epoch to
//!   the end of its last epoch beyond the threshold, so it has a 3.75 s
//!   resolution; its nadir is the lowest epoch mean. Nothing is detected
//!   before the first baseline (5 min of valid signal).
//! - **Signal loss**: the share of the expected 4 Hz samples (one per 250 ms
//!   since the start) that did not arrive in range before their epoch
//!   closed; over the session, and over the last 10 min (the last 160
//!   closed epochs), so that a dropout after a long good stretch shows.
//! - **Contractions** (rough, for the summary): the toco epoch mean rises
//!   ≥ 15 % above a resting tone for ≥ 30 s; the resting tone follows the
//!   toco quickly downwards and slowly (≈ 10 min) upwards. Toco is relative,
//!   so this counts, it does not measure.
//!
//! # Numbers
//!
//! Sums inside an epoch or a minute are short (≤ 16 terms) and taken in time
//! order. Session-long sums are the STV sum (Neumaier-compensated) and the
//! FHR histogram used for the session baseline, whose bins hold offsets from
//! the bin's lower edge (values in [0, 1)), so a day-long session loses no
//! precision.
//!
//! # Limits
//!
//! - Only STV and the FIGO-style figures above; the rest of the Dawes-Redman
//!   criteria (episodes of high variation, long-term variation, signal
//!   "criteria met") are not computed.
//! - Dawes-Redman norms are antepartum. On the intrapartum CTU-UHB records
//!   (tests) STV runs 10–20 ms, higher in the second stage, and decel-heavy
//!   windows often have no baseline (`None`).
//! - A sample far ahead of the others (a device clock jump) closes every
//!   epoch up to it, and the samples that then arrive for those epochs are
//!   dropped as late; the gateway's `future_time` check (> 5 min) bounds
//!   the damage.

use serde::Serialize;
use vaka_gateway::UnixMillis;

/// One sample slot: FHR and toco come at 4 Hz.
pub const SAMPLE_MS: i64 = 250;
/// Samples per epoch: 3.75 s, the Dawes-Redman unit (1/16 min).
pub const EPOCH_SAMPLES: usize = 15;
pub const EPOCH_MS: i64 = SAMPLE_MS * EPOCH_SAMPLES as i64;
/// Epochs per minute.
pub const MINUTE_EPOCHS: u64 = 16;
/// The accepted FHR range (ARCHITECTURE §2); anything else is signal loss.
pub const FHR_MIN_BPM: f64 = 50.0;
pub const FHR_MAX_BPM: f64 = 240.0;
/// How far from the baseline an epoch must be to belong to an acceleration
/// or a deceleration.
pub const EXCURSION_BPM: f64 = 15.0;
/// Shorter accelerations and decelerations are not counted.
pub const MIN_EXCURSION_MS: i64 = 15 * UnixMillis::SECOND;
/// A deceleration this long is "long" (FIGO: prolonged), the trigger of
/// `fetal_deceleration`.
pub const LONG_DECELERATION_MS: i64 = 3 * UnixMillis::MINUTE;
/// A valid minute whose epoch means span less than this has low amplitude.
pub const LOW_AMPLITUDE_BPM: f64 = 5.0;
/// The baseline window: 10 min. The rolling signal loss is taken over the
/// same window.
pub const BASELINE_WINDOW_MS: i64 = 10 * UnixMillis::MINUTE;
/// The rolling STV window: the last 60 min (a Dawes-Redman analysis covers
/// at most 60 min), so a late fall in variability is not averaged away by
/// the hours before it.
pub const STV_WINDOW_MINUTES: u32 = 60;

/// Epochs in the baseline window (10 min).
const WINDOW_EPOCHS: usize = 160;
/// Minutes in the rolling STV window.
const STV_WINDOW: usize = STV_WINDOW_MINUTES as usize;
/// The baseline needs this many valid epochs in its window (5 min).
const MIN_BASELINE_EPOCHS: usize = WINDOW_EPOCHS / 2;
/// Epochs that accept samples: the newest one and the three before it.
const OPEN_EPOCHS: u64 = 4;
const OPEN_SLOTS: usize = OPEN_EPOCHS as usize * EPOCH_SAMPLES;
/// An epoch is valid with more than half of its samples.
const MIN_EPOCH_SAMPLES: u32 = 8;
/// A minute is valid with at least half of its epochs valid.
const MIN_MINUTE_EPOCHS: u8 = 8;
/// Valid epochs back inside the band that end an excursion.
const RECOVERY_EPOCHS: u8 = 2;
/// Epochs without a valid epoch beyond the band after which an excursion
/// ends anyway (signal loss bridged up to 1 min).
const MAX_BRIDGE_EPOCHS: u64 = 16;
/// Whole-bpm histogram bins over 50–240 bpm, for the session baseline.
const HIST_BINS: usize = 191;
/// Toco: rise above the resting tone that starts / keeps a contraction (%).
const CONTRACTION_START_PCT: f64 = 15.0;
const CONTRACTION_KEEP_PCT: f64 = 10.0;
/// Toco: epochs (30 s) a rise must last to count as a contraction.
const CONTRACTION_EPOCHS: u16 = 8;

// The open-slot bitmaps are one u64 each.
const _: () = assert!(OPEN_SLOTS <= 64);

/// An ongoing or finished deceleration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Deceleration {
    /// Data time of the start of its first epoch.
    #[serde(with = "crate::alerts::rfc3339")]
    pub start: UnixMillis,
    /// From `start` to the end of its last epoch ≥ 15 bpm below the baseline
    /// (so far, if ongoing).
    pub duration_ms: i64,
    /// The lowest epoch mean FHR in it.
    pub nadir_bpm: f64,
    /// The baseline in force when it started, against which it is measured.
    pub baseline_bpm: f64,
    /// `baseline_bpm - nadir_bpm`.
    pub depth_bpm: f64,
}

/// The thresholds of the patient's plan that the analysis itself depends
/// on (ARCHITECTURE §4: every threshold is overridable), so that the
/// figures the rules read, and the stored summary, are counted by the
/// plan's definitions. The defaults are FIGO's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CtgLimits {
    /// A deceleration is a run of epochs at least this far below the
    /// baseline (`fetal_deceleration_bpm`, FIGO 15 bpm).
    pub deceleration_bpm: f64,
    /// A deceleration this long is long (`fetal_deceleration_min`, FIGO's
    /// prolonged: 3 min).
    pub long_deceleration_ms: i64,
    /// A valid minute whose epoch means span less than this has low
    /// amplitude (`fetal_amplitude_low_bpm`, FIGO 5 bpm).
    pub low_amplitude_bpm: f64,
}

impl Default for CtgLimits {
    fn default() -> Self {
        CtgLimits {
            deceleration_bpm: EXCURSION_BPM,
            long_deceleration_ms: LONG_DECELERATION_MS,
            low_amplitude_bpm: LOW_AMPLITUDE_BPM,
        }
    }
}

/// The current figures of a session: what the fetal rules read. Figures
/// cover the closed epochs only (up to the last [`CtgSession::advance_to`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CtgStatus {
    /// Analysed span since the start (whole epochs).
    pub elapsed_ms: i64,
    /// Samples expected in that span at 4 Hz.
    pub expected_samples: u64,
    /// Samples received in that span, in range, counted once.
    pub received_samples: u64,
    /// `100 × (expected − received) / expected`; 0 before anything is expected.
    pub signal_loss_pct: f64,
    /// The same share over the last 10 min (the last 160 closed epochs, or
    /// the whole session while it is shorter).
    pub window_signal_loss_pct: f64,
    /// Baseline over the last 10 min (see the module doc), `None` with less
    /// than 5 min of valid signal in the window or no stable level in it.
    pub baseline_bpm: Option<f64>,
    /// Whether 10 min of session have elapsed, i.e. the baseline window is full.
    pub baseline_window_complete: bool,
    /// Minutes with at least half of their epochs valid.
    pub valid_minutes: u32,
    /// The minutes that STV is the mean of (valid, not in a deceleration):
    /// the "minutes of valid signal" of `fetal_variability`.
    pub stv_minutes: u32,
    /// Dawes-Redman short-term variation over the session so far, in ms.
    pub stv_ms: Option<f64>,
    /// The STV minutes among the last 60 minutes of the session.
    pub window_stv_minutes: u32,
    /// STV over those minutes (the mean of their per-minute values), in ms.
    pub window_stv_ms: Option<f64>,
    /// Range of epoch means in the last valid minute, in bpm.
    pub last_minute_amplitude_bpm: Option<f64>,
    /// The current run of valid minutes with an amplitude below
    /// [`CtgLimits::low_amplitude_bpm`] (5 bpm).
    pub low_amplitude_minutes: u32,
    /// Completed accelerations (≥ 15 bpm above baseline for ≥ 15 s).
    pub accelerations: u32,
    /// Completed decelerations (≥ [`CtgLimits::deceleration_bpm`], 15 bpm,
    /// below baseline for ≥ 15 s).
    pub decelerations: u32,
    /// Of those, the ones that lasted [`CtgLimits::long_deceleration_ms`]
    /// (3 min) or more.
    pub long_decelerations: u32,
    /// The deceleration going on now, once it has lasted 15 s. The
    /// `fetal_deceleration` rule alerts when its `duration_ms` reaches the
    /// plan's minimum (3 min), before it ends.
    pub current_deceleration: Option<Deceleration>,
    /// The most recent completed deceleration.
    pub last_deceleration: Option<Deceleration>,
    /// Contractions seen on toco (rough; see the module doc).
    pub contractions: u32,
}

/// What is stored when a session ends. It covers the session from its start
/// to its last sample (fhr or toco): time after the last sample (the 5 min
/// of silence that end a session) is not loss of this recording.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CtgSummary {
    #[serde(with = "crate::alerts::rfc3339")]
    pub start: UnixMillis,
    /// Data time of the last sample (its slot on the session's grid).
    #[serde(with = "crate::alerts::rfc3339")]
    pub end: UnixMillis,
    /// From the start to the end of the last sample's slot (`end` + 250 ms).
    pub duration_ms: i64,
    pub expected_samples: u64,
    pub received_samples: u64,
    pub signal_loss_pct: f64,
    /// Baseline over the whole session: the mean of the valid epochs within
    /// ±15 bpm of their median (resolved to whole-bpm bins).
    pub baseline_bpm: Option<f64>,
    pub stv_ms: Option<f64>,
    pub stv_minutes: u32,
    pub valid_minutes: u32,
    /// The longest run of low-amplitude minutes.
    pub longest_low_amplitude_minutes: u32,
    /// Counts include an acceleration or deceleration still going on at the
    /// end, if it already qualified.
    pub accelerations: u32,
    pub decelerations: u32,
    pub long_decelerations: u32,
    pub longest_deceleration_ms: i64,
    pub contractions: u32,
    /// Extremes of the accepted samples (in range, so artefacts included).
    pub max_fhr_bpm: Option<f64>,
    pub min_fhr_bpm: Option<f64>,
}

/// The analysis of one CTG session. See the module doc. `Clone` copies the
/// whole state (no heap): that is how a session is summarised at an idle
/// timeout without closing epochs that a late pack may still fill.
#[derive(Clone)]
pub struct CtgSession {
    start: UnixMillis,
    limits: CtgLimits,
    /// Time of slot 0: `start` moved by less than half a slot onto the
    /// device's own sample grid, fixed by the first sample (or by the first
    /// `advance_to`, at `start`).
    grid0: Option<i64>,

    // Intake: the open epochs `next_epoch .. next_epoch + OPEN_EPOCHS`.
    // Absolute slot `s` lives at `s % OPEN_SLOTS`; bit `i` of `seen_*` says
    // whether position `i` holds a sample.
    next_epoch: u64,
    fhr: [f64; OPEN_SLOTS],
    /// Toco only feeds the rough contraction count: f32 keeps the session
    /// within its 5 KiB.
    toco: [f32; OPEN_SLOTS],
    seen_fhr: u64,
    seen_toco: u64,
    /// The latest slot with an accepted sample (fhr or toco).
    last_slot: Option<u64>,
    max_fhr: f64,
    min_fhr: f64,

    // Closed epochs.
    received: u64,
    minute: Minute,
    /// Mean FHR of the last 160 epochs (NaN: invalid), at `epoch % 160`.
    window: [f64; WINDOW_EPOCHS],
    window_valid: u16,
    /// Samples received in each of the last 160 epochs (0–15, so two to a
    /// byte: epoch `e` is nibble `e % 160`), and their sum: the rolling
    /// signal loss.
    window_received: [u8; WINDOW_EPOCHS / 2],
    window_received_sum: u16,
    baseline: Option<f64>,
    /// The last baseline that was not `None`, and the epoch count when it
    /// was computed: the reference for excursions while `baseline` is None.
    last_baseline: Option<(f64, u64)>,
    decel: Option<Excursion>,
    accel: Option<Excursion>,
    decelerations: u32,
    long_decelerations: u32,
    longest_deceleration_ms: i64,
    last_deceleration: Option<Deceleration>,
    accelerations: u32,
    valid_minutes: u32,
    stv_sum: Sum,
    stv_minutes: u32,
    /// Per-minute STV of the last 60 minutes, at `minute % 60` (NaN: the
    /// minute does not count), and the mean of those that count, recomputed
    /// at the end of every minute. f32 is plenty for a figure compared with
    /// 3 ms, and keeps the session within its 5 KiB.
    stv_window: [f32; STV_WINDOW],
    window_stv_sum: f64,
    window_stv_minutes: u8,
    last_amplitude: Option<f64>,
    low_amplitude_run: u32,
    longest_low_amplitude_run: u32,
    /// Session histogram of valid epoch means: count and sum of offsets from
    /// the bin's lower edge, per whole bpm from 50.
    hist_count: [u32; HIST_BINS],
    hist_offset: [f64; HIST_BINS],
    contractions: Contractions,
}

/// One closed epoch.
#[derive(Debug, Clone, Copy)]
struct Epoch {
    index: u64,
    /// In-range FHR samples received (0–15).
    received: u8,
    fhr_bpm: Option<f64>,
    pulse_ms: Option<f64>,
    toco_pct: Option<f64>,
}

/// Aggregates of the minute being filled.
#[derive(Debug, Clone, Copy)]
struct Minute {
    valid_epochs: u8,
    prev_pulse_ms: Option<f64>,
    diff_sum_ms: f64,
    diffs: u8,
    fhr_min: f64,
    fhr_max: f64,
    in_deceleration: bool,
}

impl Minute {
    const EMPTY: Minute = Minute {
        valid_epochs: 0,
        prev_pulse_ms: None,
        diff_sum_ms: 0.0,
        diffs: 0,
        fhr_min: f64::INFINITY,
        fhr_max: f64::NEG_INFINITY,
        in_deceleration: false,
    };

    fn add(&mut self, epoch: &Epoch, in_deceleration: bool) {
        self.in_deceleration |= in_deceleration;
        if let (Some(fhr), Some(pulse)) = (epoch.fhr_bpm, epoch.pulse_ms) {
            self.valid_epochs += 1;
            self.fhr_min = self.fhr_min.min(fhr);
            self.fhr_max = self.fhr_max.max(fhr);
            if let Some(prev) = self.prev_pulse_ms {
                self.diff_sum_ms += (pulse - prev).abs();
                self.diffs += 1;
            }
            self.prev_pulse_ms = Some(pulse);
        } else {
            self.prev_pulse_ms = None;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Below,
    Above,
}

/// A run of epochs beyond the band around the baseline.
#[derive(Debug, Clone, Copy)]
struct Excursion {
    first_epoch: u64,
    last_epoch: u64,
    reference_bpm: f64,
    /// Nadir (below) or peak (above).
    extreme_bpm: f64,
    /// Valid epochs back inside the band since `last_epoch`.
    back: u8,
}

impl Excursion {
    fn duration_ms(&self) -> i64 {
        epochs_ms(self.last_epoch - self.first_epoch + 1)
    }
}

impl Direction {
    /// Whether `fhr` is `depth` or more beyond `reference`.
    fn beyond(self, fhr: f64, reference: f64, depth: f64) -> bool {
        match self {
            Direction::Below => fhr <= reference - depth,
            Direction::Above => fhr >= reference + depth,
        }
    }

    fn extreme(self, a: f64, b: f64) -> f64 {
        match self {
            Direction::Below => a.min(b),
            Direction::Above => a.max(b),
        }
    }

    /// Feeds one closed epoch to an excursion detector; returns the
    /// excursion it ended, if any. `reference` starts a new excursion;
    /// `current` (the 10-min baseline now) can end one; `depth` is how far
    /// beyond them an epoch must be.
    #[allow(clippy::too_many_arguments)]
    fn step(
        self,
        state: &mut Option<Excursion>,
        epoch: u64,
        fhr: Option<f64>,
        reference: Option<f64>,
        current: Option<f64>,
        depth: f64,
    ) -> Option<Excursion> {
        let Some(x) = state else {
            if let (Some(f), Some(b)) = (fhr, reference)
                && self.beyond(f, b, depth)
            {
                *state = Some(Excursion {
                    first_epoch: epoch,
                    last_epoch: epoch,
                    reference_bpm: b,
                    extreme_bpm: f,
                    back: 0,
                });
            }
            return None;
        };
        match fhr {
            Some(f)
                if self.beyond(f, x.reference_bpm, depth)
                    && current.is_none_or(|b| self.beyond(f, b, depth)) =>
            {
                x.last_epoch = epoch;
                x.extreme_bpm = self.extreme(x.extreme_bpm, f);
                x.back = 0;
                None
            }
            Some(_) => {
                x.back += 1;
                if x.back >= RECOVERY_EPOCHS {
                    state.take()
                } else {
                    None
                }
            }
            None if epoch - x.last_epoch >= MAX_BRIDGE_EPOCHS => state.take(),
            None => None,
        }
    }
}

/// Rough contraction counter on toco epoch means.
#[derive(Debug, Clone, Copy, Default)]
struct Contractions {
    /// Resting tone, %.
    tonus: Option<f64>,
    /// Epochs of the rise going on now.
    episode: Option<u16>,
    count: u32,
}

impl Contractions {
    fn add(&mut self, toco: Option<f64>) {
        let Some(x) = toco else { return };
        let Some(tonus) = self.tonus else {
            self.tonus = Some(x);
            return;
        };
        self.episode = match self.episode {
            None if x >= tonus + CONTRACTION_START_PCT => Some(1),
            None => None,
            Some(n) if x >= tonus + CONTRACTION_KEEP_PCT => {
                let n = n.saturating_add(1);
                if n == CONTRACTION_EPOCHS {
                    self.count += 1;
                }
                Some(n)
            }
            Some(_) => None,
        };
        // Fast down (a quarter of the gap per epoch), slow up (1/160 per
        // epoch, ≈ 10 min), so contractions barely lift the tone.
        self.tonus = Some(if x < tonus {
            tonus + (x - tonus) * 0.25
        } else {
            tonus + (x - tonus) / WINDOW_EPOCHS as f64
        });
    }
}

/// Neumaier-compensated sum, for session-long sums.
#[derive(Debug, Clone, Copy, Default)]
struct Sum {
    sum: f64,
    compensation: f64,
}

impl Sum {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

fn loss_pct(expected: u64, received: u64) -> f64 {
    if expected == 0 {
        0.0
    } else {
        100.0 * expected.saturating_sub(received) as f64 / expected as f64
    }
}

fn epochs_ms(epochs: u64) -> i64 {
    i64::try_from(epochs)
        .unwrap_or(i64::MAX)
        .saturating_mul(EPOCH_MS)
}

impl CtgSession {
    /// A session that started at data time `start` (the `ctg_session_start`
    /// event, or the first `fhr` sample), with FIGO's limits. Slot 0 is put
    /// on the device's sample grid by the first sample, within ±125 ms of
    /// `start`.
    pub fn new(start: UnixMillis) -> CtgSession {
        CtgSession::with_limits(start, CtgLimits::default())
    }

    /// A session analysed with the limits of the patient's plan.
    pub fn with_limits(start: UnixMillis, limits: CtgLimits) -> CtgSession {
        CtgSession {
            start,
            limits,
            grid0: None,
            next_epoch: 0,
            fhr: [0.0; OPEN_SLOTS],
            toco: [0.0; OPEN_SLOTS],
            seen_fhr: 0,
            seen_toco: 0,
            last_slot: None,
            max_fhr: f64::NEG_INFINITY,
            min_fhr: f64::INFINITY,
            received: 0,
            minute: Minute::EMPTY,
            window: [f64::NAN; WINDOW_EPOCHS],
            window_valid: 0,
            window_received: [0; WINDOW_EPOCHS / 2],
            window_received_sum: 0,
            baseline: None,
            last_baseline: None,
            decel: None,
            accel: None,
            decelerations: 0,
            long_decelerations: 0,
            longest_deceleration_ms: 0,
            last_deceleration: None,
            accelerations: 0,
            valid_minutes: 0,
            stv_sum: Sum::default(),
            stv_minutes: 0,
            stv_window: [f32::NAN; STV_WINDOW],
            window_stv_sum: 0.0,
            window_stv_minutes: 0,
            last_amplitude: None,
            low_amplitude_run: 0,
            longest_low_amplitude_run: 0,
            hist_count: [0; HIST_BINS],
            hist_offset: [0.0; HIST_BINS],
            contractions: Contractions::default(),
        }
    }

    pub fn start(&self) -> UnixMillis {
        self.start
    }

    pub fn limits(&self) -> CtgLimits {
        self.limits
    }

    /// New limits (the plan changed): they apply to the epochs closed from
    /// now on; an excursion going on keeps its reference.
    pub fn set_limits(&mut self, limits: CtgLimits) {
        self.limits = limits;
    }

    /// Data time of the latest accepted sample (fhr or toco), on the grid;
    /// `None` before the first.
    pub fn last_data(&self) -> Option<UnixMillis> {
        self.last_slot.map(|s| self.slot_time(s))
    }

    /// One FHR sample at data time `t`. Samples outside 50–240 bpm (or not
    /// finite) are artefacts: ignored, so their slot counts as loss. A
    /// sample for a slot already filled is ignored (redelivery), and one for
    /// an epoch already closed is dropped (its slot stays a loss).
    pub fn push_fhr(&mut self, t: UnixMillis, bpm: f64) {
        if !(FHR_MIN_BPM..=FHR_MAX_BPM).contains(&bpm) {
            return;
        }
        let Some((slot, pos)) = self.open(t) else {
            return;
        };
        let bit = 1u64 << pos;
        if self.seen_fhr & bit != 0 {
            return;
        }
        self.seen_fhr |= bit;
        self.fhr[pos] = bpm;
        self.max_fhr = self.max_fhr.max(bpm);
        self.min_fhr = self.min_fhr.min(bpm);
        self.note_slot(slot);
    }

    /// One toco sample (uterine activity, 0–100 %), same rules as FHR.
    pub fn push_toco(&mut self, t: UnixMillis, pct: f64) {
        if !(0.0..=100.0).contains(&pct) {
            return;
        }
        let Some((slot, pos)) = self.open(t) else {
            return;
        };
        let bit = 1u64 << pos;
        if self.seen_toco & bit != 0 {
            return;
        }
        self.seen_toco |= bit;
        self.toco[pos] = pct as f32;
        self.note_slot(slot);
    }

    /// Analyses every epoch that ended at or before data time `t`; their
    /// missing samples become loss. Call it with the data time of the
    /// newest sample before reading [`CtgSession::status`] (that never
    /// closes the epoch the sample is in, so the next pack still fits), and
    /// at the session's end. Never call it with the hub's clock on a
    /// session that late data may still continue: the epochs it closes
    /// would drop their samples (see [`CtgSession::summary_at`]). A long
    /// silence costs O(1): stretches with nothing to analyse are skipped
    /// whole.
    pub fn advance_to(&mut self, t: UnixMillis) {
        let grid0 = *self.grid0.get_or_insert(self.start.0);
        let rel = t.0.saturating_sub(grid0);
        if rel <= 0 {
            return;
        }
        let ended = (rel / EPOCH_MS) as u64;
        self.close_through(ended);
    }

    /// The current figures (a copy; cheap).
    pub fn status(&self) -> CtgStatus {
        let expected = self.next_epoch.saturating_mul(EPOCH_SAMPLES as u64);
        let elapsed_ms = epochs_ms(self.next_epoch);
        CtgStatus {
            elapsed_ms,
            expected_samples: expected,
            received_samples: self.received,
            signal_loss_pct: loss_pct(expected, self.received),
            window_signal_loss_pct: loss_pct(
                self.next_epoch.min(WINDOW_EPOCHS as u64) * EPOCH_SAMPLES as u64,
                u64::from(self.window_received_sum),
            ),
            baseline_bpm: self.baseline,
            baseline_window_complete: elapsed_ms >= BASELINE_WINDOW_MS,
            valid_minutes: self.valid_minutes,
            stv_minutes: self.stv_minutes,
            stv_ms: self.stv(),
            window_stv_minutes: u32::from(self.window_stv_minutes),
            window_stv_ms: (self.window_stv_minutes > 0)
                .then(|| self.window_stv_sum / f64::from(self.window_stv_minutes)),
            last_minute_amplitude_bpm: self.last_amplitude,
            low_amplitude_minutes: self.low_amplitude_run,
            accelerations: self.accelerations,
            decelerations: self.decelerations,
            long_decelerations: self.long_decelerations,
            current_deceleration: self
                .decel
                .map(|x| self.deceleration(&x))
                .filter(|d| d.duration_ms >= MIN_EXCURSION_MS),
            last_deceleration: self.last_deceleration,
            contractions: self.contractions.count,
        }
    }

    /// The summary the session would have if it ended at data time `t`
    /// (`advance_to(t)` on a copy), leaving this one as it is, so that data
    /// arriving later can still continue it: a session closed by the hub's
    /// idle timeout is summarised this way. Copies the 5 KiB state on the
    /// stack; no heap.
    pub fn summary_at(&self, t: UnixMillis) -> CtgSummary {
        let mut copy = self.clone();
        copy.advance_to(t);
        copy.summary()
    }

    /// The figures of the whole session, for storage at its end (call
    /// [`CtgSession::advance_to`] first). Epochs still open (the last
    /// < 15 s) count for loss and extremes; the analysis covers the closed
    /// ones, and STV whole minutes.
    pub fn summary(&self) -> CtgSummary {
        let closed_slots = self.next_epoch.saturating_mul(EPOCH_SAMPLES as u64);
        let expected = match self.last_slot {
            Some(s) => s + 1,
            None => closed_slots,
        };
        let received = self.received + u64::from(self.seen_fhr.count_ones());
        let duration_ms = i64::try_from(expected)
            .unwrap_or(i64::MAX)
            .saturating_mul(SAMPLE_MS);
        let end = match self.last_slot {
            Some(s) => self.slot_time(s),
            None => self.start.plus_millis(duration_ms),
        };
        let mut accelerations = self.accelerations;
        if self
            .accel
            .is_some_and(|x| x.duration_ms() >= MIN_EXCURSION_MS)
        {
            accelerations += 1;
        }
        let (mut decelerations, mut long, mut longest) = (
            self.decelerations,
            self.long_decelerations,
            self.longest_deceleration_ms,
        );
        if let Some(x) = &self.decel {
            let ms = x.duration_ms();
            if ms >= MIN_EXCURSION_MS {
                decelerations += 1;
                long += u32::from(ms >= self.limits.long_deceleration_ms);
                longest = longest.max(ms);
            }
        }
        CtgSummary {
            start: self.start,
            end,
            duration_ms,
            expected_samples: expected,
            received_samples: received,
            signal_loss_pct: loss_pct(expected, received),
            baseline_bpm: self.session_baseline(),
            stv_ms: self.stv(),
            stv_minutes: self.stv_minutes,
            valid_minutes: self.valid_minutes,
            longest_low_amplitude_minutes: self.longest_low_amplitude_run,
            accelerations,
            decelerations,
            long_decelerations: long,
            longest_deceleration_ms: longest,
            contractions: self.contractions.count,
            max_fhr_bpm: self.max_fhr.is_finite().then_some(self.max_fhr),
            min_fhr_bpm: self.min_fhr.is_finite().then_some(self.min_fhr),
        }
    }

    fn stv(&self) -> Option<f64> {
        (self.stv_minutes > 0).then(|| self.stv_sum.value() / f64::from(self.stv_minutes))
    }

    fn slot_time(&self, slot: u64) -> UnixMillis {
        let grid0 = self.grid0.unwrap_or(self.start.0);
        let ms = i64::try_from(slot)
            .unwrap_or(i64::MAX)
            .saturating_mul(SAMPLE_MS);
        UnixMillis(grid0.saturating_add(ms))
    }

    fn epoch_time(&self, epoch: u64) -> UnixMillis {
        UnixMillis(
            self.grid0
                .unwrap_or(self.start.0)
                .saturating_add(epochs_ms(epoch)),
        )
    }

    fn deceleration(&self, x: &Excursion) -> Deceleration {
        Deceleration {
            start: self.epoch_time(x.first_epoch),
            duration_ms: x.duration_ms(),
            nadir_bpm: x.extreme_bpm,
            baseline_bpm: x.reference_bpm,
            depth_bpm: x.reference_bpm - x.extreme_bpm,
        }
    }

    /// The slot of data time `t` (nearest grid point) and its position in
    /// the open buffer, closing older epochs if `t` is beyond the buffer.
    /// `None` before the start or for an epoch already closed.
    fn open(&mut self, t: UnixMillis) -> Option<(u64, usize)> {
        const HALF: i64 = SAMPLE_MS / 2;
        let grid0 = match self.grid0 {
            Some(g) => g,
            None => {
                let rel = t.0.saturating_sub(self.start.0);
                if rel < -HALF {
                    return None;
                }
                // The offset in [-125, 125) ms that puts `t` on the grid.
                let offset = rel.saturating_add(HALF).rem_euclid(SAMPLE_MS) - HALF;
                let g = self.start.0.saturating_add(offset);
                self.grid0 = Some(g);
                g
            }
        };
        let rel = t.0.saturating_sub(grid0);
        let slot = u64::try_from(rel.saturating_add(HALF).div_euclid(SAMPLE_MS)).ok()?;
        let epoch = slot / EPOCH_SAMPLES as u64;
        if epoch < self.next_epoch {
            return None;
        }
        if epoch >= self.next_epoch + OPEN_EPOCHS {
            self.close_through(epoch + 1 - OPEN_EPOCHS);
        }
        Some((slot, (slot % OPEN_SLOTS as u64) as usize))
    }

    fn note_slot(&mut self, slot: u64) {
        self.last_slot = Some(self.last_slot.map_or(slot, |s| s.max(slot)));
    }

    /// Closes epochs until `next_epoch == target`.
    fn close_through(&mut self, target: u64) {
        while self.next_epoch < target {
            if self.next_epoch.is_multiple_of(MINUTE_EPOCHS) && self.quiescent() {
                // Nothing buffered, nothing going on, no valid epoch in the
                // window: whole minutes of loss change nothing but the
                // count of closed epochs (the ring stays all-NaN, the
                // minutes are invalid, the baseline stays None, toco state
                // only moves on toco data).
                let minutes = (target - self.next_epoch) / MINUTE_EPOCHS;
                if minutes > 0 {
                    self.skip_minutes(minutes);
                    continue;
                }
            }
            self.close_epoch();
        }
    }

    /// Skips `minutes` whole minutes of total loss (see `close_through`):
    /// they leave the rolling windows as they pass. O(1) in the length of
    /// the silence (at most 160 epochs and 60 minutes to clear).
    fn skip_minutes(&mut self, minutes: u64) {
        let epochs = minutes * MINUTE_EPOCHS;
        for e in self.next_epoch..self.next_epoch + epochs.min(WINDOW_EPOCHS as u64) {
            self.set_received(e, 0);
        }
        let first_minute = self.next_epoch / MINUTE_EPOCHS;
        for m in first_minute..first_minute + minutes.min(STV_WINDOW as u64) {
            self.stv_window[(m % STV_WINDOW as u64) as usize] = f32::NAN;
        }
        self.next_epoch += epochs;
        self.sum_stv_window();
    }

    /// Records the samples received in epoch `e` in the rolling loss
    /// window, replacing those of the epoch 10 min before it.
    fn set_received(&mut self, e: u64, n: u8) {
        let w = (e % WINDOW_EPOCHS as u64) as usize;
        let (byte, shift) = (w / 2, (w % 2) * 4);
        let old = (self.window_received[byte] >> shift) & 0x0f;
        self.window_received[byte] = (self.window_received[byte] & !(0x0f << shift)) | (n << shift);
        self.window_received_sum = self.window_received_sum - u16::from(old) + u16::from(n);
    }

    /// The mean per-minute STV over the rolling window, oldest minute first
    /// (O(60), once a minute).
    fn sum_stv_window(&mut self) {
        let (mut sum, mut n) = (0.0, 0u8);
        let oldest = (self.next_epoch / MINUTE_EPOCHS) as usize;
        for i in 0..STV_WINDOW {
            let v = self.stv_window[(oldest + i) % STV_WINDOW];
            if !v.is_nan() {
                sum += f64::from(v);
                n += 1;
            }
        }
        self.window_stv_sum = sum;
        self.window_stv_minutes = n;
    }

    fn quiescent(&self) -> bool {
        self.seen_fhr == 0
            && self.seen_toco == 0
            && self.window_valid == 0
            && self.baseline.is_none()
            && self.decel.is_none()
            && self.accel.is_none()
    }

    /// Closes the oldest open epoch: sums its samples in time order, frees
    /// its slots and analyses it.
    fn close_epoch(&mut self) {
        let index = self.next_epoch;
        let first = (index % OPEN_EPOCHS) as usize * EPOCH_SAMPLES;
        let (mut n, mut bpm_sum, mut pulse_sum) = (0u32, 0.0, 0.0);
        let (mut n_toco, mut toco_sum) = (0u32, 0.0);
        for pos in first..first + EPOCH_SAMPLES {
            let bit = 1u64 << pos;
            if self.seen_fhr & bit != 0 {
                let bpm = self.fhr[pos];
                n += 1;
                bpm_sum += bpm;
                pulse_sum += 60_000.0 / bpm;
            }
            if self.seen_toco & bit != 0 {
                n_toco += 1;
                toco_sum += f64::from(self.toco[pos]);
            }
        }
        let mask = ((1u64 << EPOCH_SAMPLES) - 1) << first;
        self.seen_fhr &= !mask;
        self.seen_toco &= !mask;
        self.next_epoch += 1;
        self.received += u64::from(n);
        let valid = n >= MIN_EPOCH_SAMPLES;
        self.analyse(Epoch {
            index,
            // n ≤ 15: one bit per slot of the epoch.
            received: n as u8,
            fhr_bpm: valid.then(|| bpm_sum / f64::from(n)),
            pulse_ms: valid.then(|| pulse_sum / f64::from(n)),
            toco_pct: (n_toco >= MIN_EPOCH_SAMPLES).then(|| toco_sum / f64::from(n_toco)),
        });
    }

    fn analyse(&mut self, epoch: Epoch) {
        let e = epoch.index;
        // Excursions, against the baseline in force (last minute's, or the
        // last known one if less than 10 min old).
        let reference = self.baseline.or(self
            .last_baseline
            .filter(|&(_, at)| e - at < WINDOW_EPOCHS as u64)
            .map(|(b, _)| b));
        let (fhr, current) = (epoch.fhr_bpm, self.baseline);
        let was_decel = self.decel.is_some();
        let depth = self.limits.deceleration_bpm;
        if let Some(x) = Direction::Below.step(&mut self.decel, e, fhr, reference, current, depth) {
            let d = self.deceleration(&x);
            if d.duration_ms >= MIN_EXCURSION_MS {
                self.decelerations += 1;
                if d.duration_ms >= self.limits.long_deceleration_ms {
                    self.long_decelerations += 1;
                }
                self.longest_deceleration_ms = self.longest_deceleration_ms.max(d.duration_ms);
                self.last_deceleration = Some(d);
            }
        }
        let in_decel = was_decel || self.decel.is_some();
        if let Some(x) =
            Direction::Above.step(&mut self.accel, e, fhr, reference, current, EXCURSION_BPM)
            && x.duration_ms() >= MIN_EXCURSION_MS
        {
            self.accelerations += 1;
        }

        // The 10-min windows and the session histogram.
        self.set_received(e, epoch.received);
        let w = (e % WINDOW_EPOCHS as u64) as usize;
        if !self.window[w].is_nan() {
            self.window_valid -= 1;
        }
        self.window[w] = epoch.fhr_bpm.unwrap_or(f64::NAN);
        if let Some(fhr) = epoch.fhr_bpm {
            self.window_valid += 1;
            // fhr is in [50, 240], so the bin is in 0..=190.
            let bin = ((fhr - FHR_MIN_BPM) as usize).min(HIST_BINS - 1);
            self.hist_count[bin] += 1;
            self.hist_offset[bin] += fhr - (FHR_MIN_BPM + bin as f64);
        }

        self.minute.add(&epoch, in_decel);
        if e % MINUTE_EPOCHS == MINUTE_EPOCHS - 1 {
            self.close_minute(e / MINUTE_EPOCHS);
        }
        self.contractions.add(epoch.toco_pct);
    }

    /// Closes minute `index` of the session.
    fn close_minute(&mut self, index: u64) {
        let m = std::mem::replace(&mut self.minute, Minute::EMPTY);
        let mut stv = f32::NAN;
        if m.valid_epochs >= MIN_MINUTE_EPOCHS {
            self.valid_minutes += 1;
            let amplitude = m.fhr_max - m.fhr_min;
            self.last_amplitude = Some(amplitude);
            if amplitude < self.limits.low_amplitude_bpm {
                self.low_amplitude_run += 1;
                self.longest_low_amplitude_run =
                    self.longest_low_amplitude_run.max(self.low_amplitude_run);
            } else {
                self.low_amplitude_run = 0;
            }
            if !m.in_deceleration && m.diffs > 0 {
                let minute_stv = m.diff_sum_ms / f64::from(m.diffs);
                self.stv_sum.add(minute_stv);
                self.stv_minutes += 1;
                stv = minute_stv as f32;
            }
        }
        self.stv_window[(index % STV_WINDOW as u64) as usize] = stv;
        self.sum_stv_window();
        self.baseline = self.window_baseline();
        if let Some(b) = self.baseline {
            self.last_baseline = Some((b, self.next_epoch));
        }
    }

    /// The baseline of the last 10 min: the mean of the valid epochs within
    /// ±15 bpm of their median (see the module doc). O(160), once a minute.
    fn window_baseline(&self) -> Option<f64> {
        let n = usize::from(self.window_valid);
        if n < MIN_BASELINE_EPOCHS {
            return None;
        }
        let mut buf = [0.0f64; WINDOW_EPOCHS];
        let mut k = 0;
        for &x in self.window.iter().filter(|x| !x.is_nan()) {
            buf[k] = x;
            k += 1;
        }
        let values = &mut buf[..k];
        let (lower, upper, _) = values.select_nth_unstable_by(k / 2, f64::total_cmp);
        let median = if k % 2 == 1 {
            *upper
        } else {
            let below = lower.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (below + *upper) / 2.0
        };
        // Mean of the band, in time order (oldest first).
        let oldest = (self.next_epoch % WINDOW_EPOCHS as u64) as usize;
        let (mut sum, mut count) = (0.0, 0usize);
        for i in 0..WINDOW_EPOCHS {
            let x = self.window[(oldest + i) % WINDOW_EPOCHS];
            // NaN (invalid) fails the comparison.
            if (x - median).abs() < EXCURSION_BPM {
                sum += x;
                count += 1;
            }
        }
        (count * 2 >= k).then(|| sum / count as f64)
    }

    /// The whole session's baseline, from the histogram of epoch means: the
    /// median bin, then the mean of the bins within 14 bpm of it (so values
    /// within about ±15 bpm of the median).
    fn session_baseline(&self) -> Option<f64> {
        let total: u64 = self.hist_count.iter().map(|&c| u64::from(c)).sum();
        if total < MIN_BASELINE_EPOCHS as u64 {
            return None;
        }
        let half = total.div_ceil(2);
        let mut cumulative = 0u64;
        let mut median_bin = 0;
        for (b, &c) in self.hist_count.iter().enumerate() {
            cumulative += u64::from(c);
            if cumulative >= half {
                median_bin = b;
                break;
            }
        }
        let band = 14;
        let lo = median_bin.saturating_sub(band);
        let hi = (median_bin + band).min(HIST_BINS - 1);
        let (mut count, mut sum) = (0u64, Sum::default());
        for b in lo..=hi {
            let c = self.hist_count[b];
            if c > 0 {
                count += u64::from(c);
                sum.add(f64::from(c) * (FHR_MIN_BPM + b as f64));
                sum.add(self.hist_offset[b]);
            }
        }
        (count > 0).then(|| sum.value() / count as f64)
    }
}

#[cfg(test)]
pub(crate) mod tests;
