//! Random number streams: ChaCha20 keyed from the operating system, or from a seed for tests.
//!
//! Training uses two independent streams, one for sampling batches and one for noise, so that the
//! noise never depends on which examples were drawn. In private runs both keys come from the
//! operating system (`getrandom`). Seeded runs are for tests and are NOT private.
//!
//! A seed is turned into keys by domain separation: a key-derivation ChaCha20 keyed by the seed (and a
//! fixed label) produces the key of each [`Domain`] — initialisation, sampling, noise — from its own
//! nonce, at the block numbered by the step at which the run (or the resumed run) starts. ChaCha20 is a
//! pseudo-random function of (nonce, block), so the three keys are independent of each other and of
//! [`seeded`]'s stream: the initial weights reveal nothing about the batches or the noise, and a
//! resumed run draws fresh noise and never replays a stream it used before.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::error::{Error, Result};

/// A plain ChaCha20 generator seeded with `seed` (rand's `seed_from_u64`): reproducible, for tests
/// and examples that need some random numbers. It is not derived with a [`Domain`]: do not use it to
/// initialise a model that is then trained with the same seed — use [`seeded_init`] for that, so the
/// initial weights and the training streams are independent.
pub fn seeded(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// The generator for initialising a model's parameters in a seeded run: the [`Domain::Init`] key of
/// `seed`, independent of the sampling and noise streams [`Streams::new`] derives from the same seed.
pub fn seeded_init(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::from_seed(derive_key(seed, Domain::Init, 0))
}

/// A ChaCha20 generator keyed with 256 bits from the operating system.
pub fn from_os() -> Result<ChaCha20Rng> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| Error::invalid("rng", format!("the operating system gave no randomness: {e}")))?;
    Ok(ChaCha20Rng::from_seed(key))
}

/// What a key derived from a seed is for; each purpose reads its own ChaCha20 nonce of the
/// key-derivation generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// The model's initial parameters.
    Init,
    /// The batches drawn by the sampler.
    Sampling,
    /// The Gaussian or discrete Gaussian noise.
    Noise,
    /// The random views of augmentation multiplicity.
    Augment,
}

impl Domain {
    /// The nonce of this purpose: its name in ASCII, so that the labels cannot collide.
    fn nonce(self) -> u64 {
        let label: &[u8; 8] = match self {
            Domain::Init => b"dp:init\0",
            Domain::Sampling => b"dp:batch",
            Domain::Noise => b"dp:noise",
            Domain::Augment => b"dp:views",
        };
        u64::from_le_bytes(*label)
    }
}

/// The label in the key of the key-derivation generator, beside the seed: it makes that key differ
/// from any key rand's `seed_from_u64` (hence [`seeded`]) expands a seed into.
const DERIVATION_LABEL: &[u8; 24] = b"dp-runtime seed kdf v1\0\0";

/// The 256-bit key for `domain` at `start_step` derived from `seed` (public for audits and tests;
/// [`seeded_init`] and [`Streams::new`] use it).
pub fn derive_key(seed: u64, domain: Domain, start_step: u64) -> [u8; 32] {
    let mut derivation_key = [0u8; 32];
    derivation_key[..8].copy_from_slice(&seed.to_le_bytes());
    derivation_key[8..].copy_from_slice(DERIVATION_LABEL);
    let mut derive = ChaCha20Rng::from_seed(derivation_key);
    derive.set_stream(domain.nonce());
    // One 64-byte block (16 words) per start step: the 32 bytes of a key never overlap another's.
    derive.set_word_pos(u128::from(start_step) * 16);
    let mut key = [0u8; 32];
    derive.fill_bytes(&mut key);
    key
}

/// Where the keys of a run's streams come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// Fresh keys from the operating system: the only private choice.
    Os,
    /// Keys derived from a seed: reproducible and not private.
    Seed(u64),
}

/// The independent streams of one training session.
#[derive(Debug, Clone)]
pub struct Streams {
    /// Draws the Poisson (or shuffled) batches.
    pub sampling: ChaCha20Rng,
    /// Draws the Gaussian or discrete Gaussian noise.
    pub noise: ChaCha20Rng,
    /// Draws the views of augmentation multiplicity.
    pub augment: ChaCha20Rng,
}

impl Streams {
    /// The streams of a session that starts at `start_step` (0 for a new run, the checkpoint's step
    /// count for a resumed one). With [`KeySource::Seed`], the keys are [`derive_key`]'s for
    /// [`Domain::Sampling`] and [`Domain::Noise`] at `start_step`: each start step gives different
    /// keys, so a resumed run never repeats the noise of the run it continues.
    pub fn new(source: KeySource, start_step: u64) -> Result<Self> {
        match source {
            KeySource::Os => Ok(Streams { sampling: from_os()?, noise: from_os()?, augment: from_os()? }),
            KeySource::Seed(seed) => Ok(Streams {
                sampling: ChaCha20Rng::from_seed(derive_key(seed, Domain::Sampling, start_step)),
                noise: ChaCha20Rng::from_seed(derive_key(seed, Domain::Noise, start_step)),
                augment: ChaCha20Rng::from_seed(derive_key(seed, Domain::Augment, start_step)),
            }),
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
    fn seeded_streams_are_reproducible_and_differ_by_start_step() {
        let mut a = Streams::new(KeySource::Seed(7), 0).unwrap();
        let mut b = Streams::new(KeySource::Seed(7), 0).unwrap();
        let mut c = Streams::new(KeySource::Seed(7), 100).unwrap();
        let (x, y, z) = (a.noise.next_u64(), b.noise.next_u64(), c.noise.next_u64());
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert_ne!(a.sampling.next_u64(), c.sampling.next_u64());
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
