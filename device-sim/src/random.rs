//! Seeded randomness.
//!
//! Every random number in the simulator comes from a ChaCha8 generator whose
//! seed is *derived* from the run's seed and a path: (patient), (patient,
//! stream, day), (patient, stream, counter). Deriving a fresh generator per
//! path, instead of drawing everything from one shared generator, is what
//! keeps a run reproducible when something is added: patient 7's weights do
//! not change because patient 50 joined, and Tuesday's reading does not
//! change because the history got a day longer or the run started an hour
//! later.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Names of the independent streams of one patient.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub(crate) enum Stream {
    /// Who the patient is: name, baselines, habits.
    Patient = 1,
    Weight = 2,
    BloodPressure = 3,
    Doses = 4,
    Refill = 5,
    Ctg = 6,
    FallSensor = 7,
    /// Readings taken because the hub asked for them.
    Remeasure = 8,
    /// The scripted episodes of the first minutes of a run.
    Episode = 9,
}

/// SplitMix64's finaliser: a bijective mixer with good avalanche, so that
/// neighbouring inputs (patient 7 and 8, day 100 and 101) give unrelated
/// seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed for the path `parts` below `seed`.
pub(crate) fn derive(seed: u64, parts: &[u64]) -> u64 {
    parts.iter().fold(mix(seed), |acc, &p| mix(acc ^ mix(p)))
}

/// The generator of the path `parts` below `seed`.
pub(crate) fn rng(seed: u64, parts: &[u64]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(derive(seed, parts))
}

/// The generator of one stream of one patient, optionally per day or counter.
pub(crate) fn stream(patient_seed: u64, stream: Stream, key: i64) -> ChaCha8Rng {
    rng(patient_seed, &[stream as u64, key as u64])
}

/// A standard normal deviate (Box–Muller). `rand_distr` would do the same;
/// one function is not worth another dependency.
pub(crate) fn gauss(rng: &mut ChaCha8Rng) -> f64 {
    // random::<f64>() is in [0, 1); 1 - u is in (0, 1], so ln never sees 0.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Normal noise with standard deviation `sd`, clipped to ±`limit`: real
/// day-to-day variation has no long tails worth simulating, and the clip lets
/// tests (and episodes) rely on hard bounds.
pub(crate) fn noise(rng: &mut ChaCha8Rng, sd: f64, limit: f64) -> f64 {
    (gauss(rng) * sd).clamp(-limit, limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn derived_streams_are_reproducible_and_distinct() {
        let a = rng(42, &[1, 2]).next_u64();
        assert_eq!(a, rng(42, &[1, 2]).next_u64());
        assert_ne!(a, rng(42, &[1, 3]).next_u64());
        assert_ne!(a, rng(43, &[1, 2]).next_u64());
        assert_ne!(derive(0, &[1, 0]), derive(0, &[0, 1]));
    }

    #[test]
    fn noise_is_bounded_and_centred() {
        let mut r = rng(7, &[]);
        let xs: Vec<f64> = (0..10_000).map(|_| noise(&mut r, 0.15, 0.3)).collect();
        assert!(xs.iter().all(|x| x.abs() <= 0.3));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        let sd = (xs.iter().map(|x| x * x).sum::<f64>() / xs.len() as f64).sqrt();
        assert!((sd - 0.15).abs() < 0.01, "sd {sd}");
    }
}
