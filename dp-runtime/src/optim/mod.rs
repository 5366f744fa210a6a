//! Optimizers and learning-rate schedules for DP-SGD.
//!
//! An optimizer step is the single pass over the parameters that finishes a private step: for each
//! coordinate j it reads the clipped sum s_j, draws the noise z_j, forms the gradient estimate
//! g_j = (s_j + σC·z_j) / B_expected and updates the parameter and its state. The division is by the
//! EXPECTED batch size, never the realised one (which would leak it). [`NoisyGradient`] is that stream.

mod adam;
mod schedule;
mod sgd;

pub use adam::Adam;
pub use schedule::Schedule;
pub use sgd::Sgd;

use crate::error::Result;
use crate::noise::GaussianNoise;

/// Coordinates per chunk of [`NoisyGradient::for_each_chunk`]: 2 KiB of `f64` on the stack.
pub const GRADIENT_CHUNK: usize = 256;

/// The noisy, normalised gradient, produced lazily coordinate by coordinate in one pass.
pub struct NoisyGradient<'a> {
    sum: &'a [f32],
    noise: NoiseSource<'a>,
    noise_std: f64,
    inverse_batch: f64,
}

/// Where the standard normals of a [`NoisyGradient`] come from.
enum NoiseSource<'a> {
    /// No noise (secure mode's already-noised sum, or a non-private step).
    Silent,
    /// Drawn coordinate by coordinate as the gradient is read.
    Stream(&'a mut GaussianNoise),
    /// Drawn beforehand, one per coordinate, in coordinate order (see [`GaussianNoise::fill`]).
    Drawn(&'a [f64]),
    /// Already added: the released sum + σC·z of a distributed step, formed in f64 by the rank that
    /// drew the noise (`distributed`); `sum` is empty.
    Released(&'a [f64]),
}

impl<'a> NoisyGradient<'a> {
    /// (sum + noise_std·z) / expected_batch per coordinate, with z ~ N(0, 1) from `noise`
    /// (`None` when the sum is already noised, as in secure mode, or for non-private steps).
    pub fn new(
        sum: &'a [f32],
        noise: Option<&'a mut GaussianNoise>,
        noise_std: f64,
        expected_batch: f64,
    ) -> Self {
        let noise = noise.map_or(NoiseSource::Silent, NoiseSource::Stream);
        NoisyGradient { sum, noise, noise_std, inverse_batch: 1.0 / expected_batch }
    }

    /// (sum + noise_std·z_j) / expected_batch with the standard normals `z` drawn beforehand, one per
    /// coordinate, e.g. while the clipped sum was being computed. The same draws in the same order give
    /// exactly the values of [`NoisyGradient::new`] with the stream they came from.
    pub fn with_drawn_noise(sum: &'a [f32], z: &'a [f64], noise_std: f64, expected_batch: f64) -> Self {
        assert_eq!(z.len(), sum.len(), "one drawn normal per gradient coordinate");
        NoisyGradient { sum, noise: NoiseSource::Drawn(z), noise_std, inverse_batch: 1.0 / expected_batch }
    }

    /// released / expected_batch per coordinate, where `released` = sum + σC·z was formed in f64 as
    /// [`with_drawn_noise`](Self::with_drawn_noise) forms it (`s as f64 + noise_std * z`), so the same
    /// sum and draws give exactly its values. A distributed step releases this vector from the rank
    /// that drew the noise to every rank.
    pub fn released(released: &'a [f64], expected_batch: f64) -> Self {
        NoisyGradient {
            sum: &[],
            noise: NoiseSource::Released(released),
            noise_std: 0.0,
            inverse_batch: 1.0 / expected_batch,
        }
    }

    /// Number of coordinates.
    pub fn len(&self) -> usize {
        match self.noise {
            NoiseSource::Released(released) => released.len(),
            NoiseSource::Silent | NoiseSource::Stream(_) | NoiseSource::Drawn(_) => self.sum.len(),
        }
    }

    /// Whether there are no coordinates.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `update(coordinates, values)` for consecutive chunks of at most [`GRADIENT_CHUNK`]
    /// coordinates, with exactly the values of [`values`](Self::values) (the same operations, the
    /// noise drawn in the same order). The noise source is matched once per chunk, not per coordinate,
    /// so an optimizer's loop over a chunk is arithmetic on slices that the compiler vectorises; the
    /// optimizers step through this.
    pub fn for_each_chunk(self, mut update: impl FnMut(std::ops::Range<usize>, &[f64])) {
        let len = self.len();
        let NoisyGradient { sum, mut noise, noise_std, inverse_batch } = self;
        let mut buffer = [0.0f64; GRADIENT_CHUNK];
        for start in (0..len).step_by(GRADIENT_CHUNK) {
            let range = start..(start + GRADIENT_CHUNK).min(len);
            let values = &mut buffer[..range.len()];
            match &mut noise {
                NoiseSource::Silent => {
                    for (v, &s) in values.iter_mut().zip(&sum[range.clone()]) {
                        *v = unnoised(s, inverse_batch);
                    }
                }
                NoiseSource::Stream(stream) => {
                    for (v, &s) in values.iter_mut().zip(&sum[range.clone()]) {
                        *v = noised(s, noise_std, stream.standard_normal(), inverse_batch);
                    }
                }
                NoiseSource::Drawn(z) => {
                    for ((v, &s), &z) in values.iter_mut().zip(&sum[range.clone()]).zip(&z[range.clone()]) {
                        *v = noised(s, noise_std, z, inverse_batch);
                    }
                }
                NoiseSource::Released(noised_sum) => {
                    for (v, &r) in values.iter_mut().zip(&noised_sum[range.clone()]) {
                        *v = released(r, inverse_batch);
                    }
                }
            }
            update(range, values);
        }
    }

    /// The gradient estimates in coordinate order (each draws its noise as it is produced).
    pub fn values(self) -> GradientValues<'a> {
        let NoisyGradient { sum, noise, noise_std, inverse_batch } = self;
        match noise {
            NoiseSource::Silent => GradientValues::Silent { sum: sum.iter(), inverse_batch },
            NoiseSource::Stream(noise) => {
                GradientValues::Stream { sum: sum.iter(), noise, noise_std, inverse_batch }
            }
            NoiseSource::Drawn(z) => {
                GradientValues::Drawn { sum: sum.iter().zip(z.iter()), noise_std, inverse_batch }
            }
            NoiseSource::Released(released) => {
                GradientValues::Released { released: released.iter(), inverse_batch }
            }
        }
    }
}

// One coordinate's gradient estimate, for each kind of source: shared by `values()` and
// `for_each_chunk`, which must give the same bits.

/// `s / B`.
#[inline(always)]
fn unnoised(s: f32, inverse_batch: f64) -> f64 {
    s as f64 * inverse_batch
}

/// `(s + σC·z) / B`.
#[inline(always)]
fn noised(s: f32, noise_std: f64, z: f64, inverse_batch: f64) -> f64 {
    (s as f64 + noise_std * z) * inverse_batch
}

/// `r / B`, `r` already noised.
#[inline(always)]
fn released(r: f64, inverse_batch: f64) -> f64 {
    r * inverse_batch
}

/// The iterator of [`NoisyGradient::values`]: one variant per noise source, so that each source's
/// loop stays simple enough to vectorise.
pub enum GradientValues<'a> {
    /// No noise: s / B.
    Silent { sum: std::slice::Iter<'a, f32>, inverse_batch: f64 },
    /// Noise drawn per coordinate: (s + σC·z) / B.
    Stream {
        sum: std::slice::Iter<'a, f32>,
        noise: &'a mut GaussianNoise,
        noise_std: f64,
        inverse_batch: f64,
    },
    /// Noise drawn beforehand: (s + σC·z) / B.
    Drawn {
        sum: std::iter::Zip<std::slice::Iter<'a, f32>, std::slice::Iter<'a, f64>>,
        noise_std: f64,
        inverse_batch: f64,
    },
    /// Noise added before release: r / B.
    Released { released: std::slice::Iter<'a, f64>, inverse_batch: f64 },
}

impl Iterator for GradientValues<'_> {
    type Item = f64;

    #[inline]
    fn next(&mut self) -> Option<f64> {
        match self {
            GradientValues::Silent { sum, inverse_batch } => sum.next().map(|&s| unnoised(s, *inverse_batch)),
            GradientValues::Stream { sum, noise, noise_std, inverse_batch } => {
                sum.next().map(|&s| noised(s, *noise_std, noise.standard_normal(), *inverse_batch))
            }
            GradientValues::Drawn { sum, noise_std, inverse_batch } => {
                sum.next().map(|(&s, &z)| noised(s, *noise_std, z, *inverse_batch))
            }
            GradientValues::Released { released: values, inverse_batch } => {
                values.next().map(|&r| released(r, *inverse_batch))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            GradientValues::Silent { sum, .. } | GradientValues::Stream { sum, .. } => sum.size_hint(),
            GradientValues::Drawn { sum, .. } => sum.size_hint(),
            GradientValues::Released { released, .. } => released.size_hint(),
        }
    }
}

/// Where training stands, for schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepInfo {
    /// Steps completed before this one.
    pub step: u64,
    /// Steps the plan will take in total.
    pub total_steps: u64,
}

/// Optimizer state for checkpoints: named flat buffers (one value per parameter) and scalars.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct OptimizerState {
    /// The optimizer, e.g. `"sgd"` or `"adam"`; a checkpoint only loads into the same kind.
    pub kind: String,
    /// Number of updates applied (Adam's bias correction uses it).
    pub updates: u64,
    /// Flat buffers (`momentum`, `exp_avg`, `exp_avg_sq`), each as long as the parameters; empty
    /// before the first step.
    #[serde(skip)]
    pub buffers: Vec<(String, Vec<f32>)>,
}

/// A first-order optimizer driven by the trainer.
pub trait Optimizer: Send {
    /// Short name, stored in checkpoints.
    fn kind(&self) -> &'static str;
    /// Applies one update to `params` (the trained ones, as many as the gradient has coordinates) with
    /// the noisy gradient, in one pass.
    fn step(&mut self, params: &mut [f32], gradient: NoisyGradient<'_>, at: StepInfo);
    /// The learning rate the schedule gives at `at`.
    fn learning_rate(&self, at: StepInfo) -> f64;
    /// The state to checkpoint.
    fn state(&self) -> OptimizerState;
    /// Restores a checkpointed state (an error names the mismatching part).
    fn load_state(&mut self, state: OptimizerState, params: usize) -> Result<()>;
    /// The update a device applies at `at`, for an optimizer a device has (SGD, Adam, AdamW); `None`
    /// otherwise.
    fn on_device(&self, at: StepInfo) -> Option<crate::device::DeviceOptimizer> {
        let _ = at;
        None
    }
}

/// Checks a loaded state's kind and buffers; shared by the optimizers.
pub(crate) fn check_state(
    state: &OptimizerState,
    kind: &str,
    expected: &[&str],
    params: usize,
) -> Result<()> {
    use crate::error::Error;
    if state.kind != kind {
        return Err(Error::invalid(
            "optimizer",
            format!("checkpoint holds {} state, the optimizer is {kind}", state.kind),
        ));
    }
    if state.buffers.is_empty() {
        return Ok(());
    }
    for name in expected {
        match state.buffers.iter().find(|(n, _)| n == name) {
            Some((_, b)) if b.len() == params => {}
            Some((_, b)) => {
                return Err(Error::invalid(
                    "optimizer",
                    format!("buffer {name} has {} values, the model {params}", b.len()),
                ))
            }
            None => return Err(Error::invalid("optimizer", format!("checkpoint lacks buffer {name}"))),
        }
    }
    Ok(())
}
