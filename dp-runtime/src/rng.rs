//! Random number streams: ChaCha20 keyed from the operating system, or from a seed for tests.
//!
//! Training uses two independent streams, one for sampling batches and one for noise, so that the
//! noise never depends on which examples were drawn. In private runs both keys come from the
//! operating system (`getrandom`). A seeded run derives both keys from the seed and from the step at
//! which the run (or the resumed run) starts, so a resumed run draws fresh noise and never replays a
//! stream it used before; seeded runs are for tests and are NOT private.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::error::{Error, Result};

/// A ChaCha20 generator seeded with `seed`: reproducible, for initialisation and tests.
pub fn seeded(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// A ChaCha20 generator keyed with 256 bits from the operating system.
pub fn from_os() -> Result<ChaCha20Rng> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| Error::invalid("rng", format!("the operating system gave no randomness: {e}")))?;
    Ok(ChaCha20Rng::from_seed(key))
}

/// Where the keys of a run's streams come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// Fresh keys from the operating system: the only private choice.
    Os,
    /// Keys derived from a seed: reproducible and not private.
    Seed(u64),
}

/// The two independent streams of one training session.
#[derive(Debug, Clone)]
pub struct Streams {
    /// Draws the Poisson (or shuffled) batches.
    pub sampling: ChaCha20Rng,
    /// Draws the Gaussian or discrete Gaussian noise.
    pub noise: ChaCha20Rng,
}

impl Streams {
    /// The streams of a session that starts at `start_step` (0 for a new run, the checkpoint's step
    /// count for a resumed one). With [`KeySource::Seed`], each start step gives different keys, so a
    /// resumed run never repeats the noise of the run it continues.
    pub fn new(source: KeySource, start_step: u64) -> Result<Self> {
        match source {
            KeySource::Os => Ok(Streams { sampling: from_os()?, noise: from_os()? }),
            KeySource::Seed(seed) => {
                // A key-derivation stream: ChaCha20 under the seed, on a stream numbered by the start step.
                let mut derive = ChaCha20Rng::seed_from_u64(seed);
                derive.set_stream(start_step);
                let mut sampling_key = [0u8; 32];
                let mut noise_key = [0u8; 32];
                derive.fill_bytes(&mut sampling_key);
                derive.fill_bytes(&mut noise_key);
                Ok(Streams {
                    sampling: ChaCha20Rng::from_seed(sampling_key),
                    noise: ChaCha20Rng::from_seed(noise_key),
                })
            }
        }
    }
}

/// A uniform `f64` in `[0, 1)` with all 53 bits of the mantissa random.
#[inline]
pub fn uniform_f64<R: RngCore + ?Sized>(rng: &mut R) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A uniform `f64` in `(0, 1]`: safe to take the logarithm of.
#[inline]
pub fn uniform_open_closed<R: RngCore + ?Sized>(rng: &mut R) -> f64 {
    ((rng.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A uniform integer in `[0, bound)`, exactly (rejection sampling; `bound > 0`).
pub fn uniform_below_u128<R: RngCore + ?Sized>(rng: &mut R, bound: u128) -> u128 {
    debug_assert!(bound > 0);
    if bound == 1 {
        return 0;
    }
    let bits = 128 - (bound - 1).leading_zeros();
    let mask = if bits == 128 { u128::MAX } else { (1u128 << bits) - 1 };
    loop {
        let candidate = if bits <= 64 {
            rng.next_u64() as u128
        } else {
            ((rng.next_u64() as u128) << 64) | rng.next_u64() as u128
        } & mask;
        if candidate < bound {
            return candidate;
        }
    }
}

/// A uniform index in `[0, bound)`, exactly (`bound > 0`).
pub fn uniform_below<R: RngCore + ?Sized>(rng: &mut R, bound: usize) -> usize {
    uniform_below_u128(rng, bound as u128) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_streams_differ_by_purpose_and_start_step() {
        let mut a = Streams::new(KeySource::Seed(7), 0).unwrap();
        let mut b = Streams::new(KeySource::Seed(7), 0).unwrap();
        let mut c = Streams::new(KeySource::Seed(7), 100).unwrap();
        let (x, y, z) = (a.noise.next_u64(), b.noise.next_u64(), c.noise.next_u64());
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert_ne!(a.sampling.next_u64(), a.noise.next_u64());
    }

    #[test]
    fn os_streams_are_fresh() {
        let mut a = Streams::new(KeySource::Os, 0).unwrap();
        let mut b = Streams::new(KeySource::Os, 0).unwrap();
        assert_ne!(a.noise.next_u64(), b.noise.next_u64());
    }

    #[test]
    fn uniform_below_covers_range() {
        let mut rng = seeded(1);
        let mut seen = [0usize; 5];
        for _ in 0..5000 {
            seen[uniform_below(&mut rng, 5)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 850 && c < 1150), "{seen:?}");
        assert!(uniform_open_closed(&mut rng) > 0.0);
    }
}
