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

/// The noisy, normalised gradient, produced lazily coordinate by coordinate in one pass.
pub struct NoisyGradient<'a> {
    sum: &'a [f32],
    noise: Option<&'a mut GaussianNoise>,
    noise_std: f64,
    inverse_batch: f64,
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
        NoisyGradient { sum, noise, noise_std, inverse_batch: 1.0 / expected_batch }
    }

    /// Number of coordinates.
    pub fn len(&self) -> usize {
        self.sum.len()
    }

    /// Whether there are no coordinates.
    pub fn is_empty(&self) -> bool {
        self.sum.is_empty()
    }

    /// The gradient estimates in coordinate order (each draws its noise as it is produced).
    pub fn values(self) -> impl Iterator<Item = f64> + 'a {
        let NoisyGradient { sum, mut noise, noise_std, inverse_batch } = self;
        sum.iter().map(move |&s| {
            let z = match noise.as_deref_mut() {
                Some(n) => noise_std * n.standard_normal(),
                None => 0.0,
            };
            (s as f64 + z) * inverse_batch
        })
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
    /// Applies one update to `params` with the noisy gradient, in one pass.
    fn step(&mut self, params: &mut [f32], gradient: NoisyGradient<'_>, at: StepInfo);
    /// The learning rate the schedule gives at `at`.
    fn learning_rate(&self, at: StepInfo) -> f64;
    /// The state to checkpoint.
    fn state(&self) -> OptimizerState;
    /// Restores a checkpointed state (an error names the mismatching part).
    fn load_state(&mut self, state: OptimizerState, params: usize) -> Result<()>;
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
