//! One private step's gradient work: a sampled batch, in physical chunks that fit the memory budget,
//! turned into the clipped sum Σ_i c_i·g_i (or, in secure mode, the exact integer-grid sum).
//!
//! With augmentation multiplicity ([`StepEngine::with_views`], `views.rs`), g_i is the average of
//! example i's gradients over K random views of it, formed before clipping: each example's
//! contribution is still one vector of norm ≤ C, so the sensitivity, hence the accounting, is
//! unchanged.

use rand_chacha::ChaCha20Rng;

use super::views::Views;
use crate::clipping::{clip_factors, ClipMode};
use crate::data::augment::Augmentation;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{Batch, DpModel, Precision, Workspace};
use crate::noise::{GaussianNoise, SecureAggregator};

/// Models with fewer parameters draw their noise on the calling thread instead of alongside the
/// clipped sum. Handing the draw to another thread costs about 4.4 µs when the step runs outside the
/// rayon pool, as `Trainer::fit` does (measured: 10.8 µs → 15.2 µs per step of a 67-parameter model;
/// inside the pool the hand-off is nearly free), while the bulk draw costs about 2.3 ns per parameter
/// (AVX-512): below 2,048 parameters the draw is cheaper than the hand-off.
pub const NOISE_ALONGSIDE_MIN_PARAMS: usize = 2048;

/// What one step's batch contributed.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchStats {
    /// Examples in the batch (realised size).
    pub examples: usize,
    /// Sum of the losses of examples with a finite gradient.
    pub loss_sum: f64,
    /// Examples whose loss entered `loss_sum`.
    pub loss_count: usize,
    /// Examples with a non-finite gradient norm (they contributed zero).
    pub non_finite: usize,
}

impl BatchStats {
    /// Adds the losses of the examples that count: a finite loss and some non-zero clip factor (an
    /// example whose every factor is 0 contributed nothing). `losses` holds `views` per example (1
    /// without augmentation multiplicity), an example's loss being their mean in f64 as the views'
    /// step forms it; `factors` holds `groups` per example.
    pub fn add_losses(&mut self, losses: &[f32], views: usize, factors: &[f32], groups: usize) {
        // Without branches: which examples count is data, not a pattern the predictor learns.
        for (losses, factors) in losses.chunks_exact(views).zip(factors.chunks_exact(groups)) {
            let loss = losses.iter().map(|&l| l as f64).sum::<f64>() / views as f64;
            let counts = factors.iter().fold(false, |any, &f| any | (f != 0.0)) & loss.is_finite();
            self.loss_sum += if counts { loss } else { 0.0 };
            self.loss_count += counts as usize;
        }
    }
}

/// Buffers reused by every step (no allocation once they have grown to the largest chunk).
pub struct StepEngine<M: DpModel> {
    clip_norm: f64,
    clip_mode: ClipMode,
    max_chunk: usize,
    workspace: Workspace,
    inputs: Vec<M::Input>,
    labels: Vec<f32>,
    losses: Vec<f32>,
    sq_norms: Vec<f32>,
    factors: Vec<f32>,
    /// Σ_i c_i·g_i of the current batch.
    pub clipped_sum: Vec<f32>,
    example_gradient: Vec<f32>,
    /// Standard normals drawn for the current batch's update, one per trained parameter.
    drawn_noise: Vec<f64>,
    /// Augmentation multiplicity, when set.
    views: Option<Views<M>>,
}

impl<M: DpModel> StepEngine<M> {
    /// Buffers for clip norm C, the given mode, and chunks of at most `max_chunk` examples.
    pub fn new(clip_norm: f64, clip_mode: ClipMode, max_chunk: usize, initial_batch: usize) -> Self {
        StepEngine {
            clip_norm,
            clip_mode,
            max_chunk: max_chunk.max(1),
            workspace: Workspace::new::<M>(initial_batch.min(max_chunk).max(1)),
            inputs: Vec::new(),
            labels: Vec::new(),
            losses: Vec::new(),
            sq_norms: Vec::new(),
            factors: Vec::new(),
            clipped_sum: vec![0.0; M::TRAINED_PARAM_COUNT],
            example_gradient: Vec::new(),
            drawn_noise: Vec::new(),
            views: None,
        }
    }

    /// Augmentation multiplicity (De et al. 2022): each example's gradient becomes the average of its
    /// gradients over `count` views drawn by `augmentation` from `rng`, clipped as one vector. Refused
    /// for token inputs, inputs that are not `[channels, height, width]` images, `count` = 0, and
    /// `count` views that do not fit one physical chunk of the memory budget.
    pub fn with_views(mut self, count: usize, augmentation: Augmentation, rng: ChaCha20Rng) -> Result<Self> {
        self.views =
            Some(Views::new(count, augmentation, rng, self.clip_norm, self.clip_mode, self.max_chunk)?);
        Ok(self)
    }

    /// The model's products in `precision` ([`Workspace::with_precision`]), the views' too.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.workspace = std::mem::take(&mut self.workspace).with_precision(precision);
        if let Some(views) = self.views.as_mut() {
            views.set_precision(precision);
        }
        self
    }

    /// With augmentation multiplicity: the batch at `indices` as its views, drawn as
    /// [`clipped_sum`](Self::clipped_sum) draws them (the same stream, in batch order) and augmented
    /// into `inputs` and `labels`, example-major; returns the views per example. `None`, and nothing
    /// drawn, without views.
    pub fn gather_views(
        &mut self,
        data: &Dataset<M::Input>,
        indices: &[usize],
        inputs: &mut Vec<M::Input>,
        labels: &mut Vec<f32>,
    ) -> Option<usize> {
        let views = self.views.as_mut()?;
        views.gather(data, indices, inputs, labels);
        Some(views.count())
    }

    /// The largest number of examples per model call.
    pub fn max_chunk(&self) -> usize {
        self.max_chunk
    }

    /// The workspace, for evaluation between steps.
    pub fn workspace(&mut self) -> &mut Workspace {
        &mut self.workspace
    }

    /// Computes the clipped sum of the examples at `indices` into `self.clipped_sum`, chunk by chunk.
    pub fn clipped_sum(
        &mut self,
        model: &M,
        data: &Dataset<M::Input>,
        indices: &[usize],
    ) -> Result<BatchStats> {
        self.clipped_sum.fill(0.0);
        let mut stats = BatchStats { examples: indices.len(), ..BatchStats::default() };
        if let Some(views) = self.views.as_mut() {
            views.clipped_sum(model, data, indices, &mut self.clipped_sum, &mut stats)?;
            return self.checked_sum(stats);
        }
        let groups = M::GROUPS.len();
        for chunk in indices.chunks(self.max_chunk) {
            self.norms_and_factors(model, data, chunk, &mut stats)?;
            let batch = Batch { inputs: &self.inputs, labels: &self.labels, size: chunk.len() };
            model.clipped_sum(
                &mut self.workspace,
                batch,
                &self.factors[..chunk.len() * groups],
                &mut self.clipped_sum,
            );
        }
        self.checked_sum(stats)
    }

    /// `stats` when the clipped sum is finite, as the contract promises; an error otherwise.
    fn checked_sum(&self, stats: BatchStats) -> Result<BatchStats> {
        if !all_finite(&self.clipped_sum) {
            return Err(Error::Mismatch {
                model: M::NAME.to_string(),
                message: "clipped_sum produced a non-finite gradient although every non-finite example had \
                          factor 0: the model breaks the DpModel contract"
                    .into(),
            });
        }
        Ok(stats)
    }

    /// [`clipped_sum`](Self::clipped_sum) and one standard normal per trained parameter drawn from `noise`
    /// ([`GaussianNoise::fill`]) into [`drawn_noise`](Self::drawn_noise). The noise does not depend on
    /// the batch, so for models of at least [`NOISE_ALONGSIDE_MIN_PARAMS`] parameters it is drawn on
    /// another thread of the pool while the clipped sum is computed, hiding its cost; smaller models
    /// draw it first on the calling thread (see the constant for why).
    pub fn clipped_sum_and_noise(
        &mut self,
        model: &M,
        data: &Dataset<M::Input>,
        indices: &[usize],
        noise: &mut GaussianNoise,
    ) -> Result<BatchStats> {
        let mut drawn = std::mem::take(&mut self.drawn_noise);
        drawn.resize(M::TRAINED_PARAM_COUNT, 0.0);
        let stats = if M::TRAINED_PARAM_COUNT < NOISE_ALONGSIDE_MIN_PARAMS {
            noise.fill(&mut drawn);
            self.clipped_sum(model, data, indices)
        } else {
            rayon::join(|| self.clipped_sum(model, data, indices), || noise.fill(&mut drawn)).0
        };
        self.drawn_noise = drawn;
        stats
    }

    /// The normals of the last [`clipped_sum_and_noise`](Self::clipped_sum_and_noise).
    pub fn drawn_noise(&self) -> &[f64] {
        &self.drawn_noise
    }

    /// Secure mode: each example separately (per-example clipped gradients are needed to round them
    /// onto the grid), added to `aggregator` exactly.
    pub fn secure_sum(
        &mut self,
        model: &M,
        data: &Dataset<M::Input>,
        indices: &[usize],
        aggregator: &mut SecureAggregator,
    ) -> Result<BatchStats> {
        aggregator.reset();
        let mut stats = BatchStats { examples: indices.len(), ..BatchStats::default() };
        self.example_gradient.resize(M::TRAINED_PARAM_COUNT, 0.0);
        if let Some(views) = self.views.as_mut() {
            views.for_each_clipped_average(model, data, indices, &mut stats, |clipped| {
                aggregator.add_example(clipped)
            })?;
            return Ok(stats);
        }
        for example in indices.chunks(1) {
            let before = stats.non_finite;
            self.norms_and_factors(model, data, example, &mut stats)?;
            if stats.non_finite > before {
                continue;
            }
            self.example_gradient.fill(0.0);
            let batch = Batch { inputs: &self.inputs, labels: &self.labels, size: 1 };
            model.clipped_sum(
                &mut self.workspace,
                batch,
                &self.factors[..M::GROUPS.len()],
                &mut self.example_gradient,
            );
            if !aggregator.add_example(&self.example_gradient)? {
                stats.non_finite += 1;
            }
        }
        Ok(stats)
    }

    /// Gathers a chunk, runs `per_example_norms` and computes its clip factors.
    fn norms_and_factors(
        &mut self,
        model: &M,
        data: &Dataset<M::Input>,
        chunk: &[usize],
        stats: &mut BatchStats,
    ) -> Result<()> {
        let groups = M::GROUPS.len();
        let size = chunk.len();
        data.gather(chunk, &mut self.inputs, &mut self.labels);
        self.workspace.ensure::<M>(size);
        self.losses.resize(size, 0.0);
        self.sq_norms.resize(size * groups, 0.0);
        self.factors.resize(size * groups, 0.0);
        let batch = Batch { inputs: &self.inputs, labels: &self.labels, size };
        model.per_example_norms(
            &mut self.workspace,
            batch,
            &mut self.losses,
            &mut self.sq_norms[..size * groups],
        );
        stats.non_finite += clip_factors(
            self.clip_mode,
            self.clip_norm,
            groups,
            &self.sq_norms[..size * groups],
            &mut self.factors[..size * groups],
        )?;
        stats.add_losses(&self.losses, 1, &self.factors[..size * groups], groups);
        Ok(())
    }
}

/// Whether every value is finite. v·0 is 0 for a finite v and NaN for ±∞ or NaN, so sixteen
/// independent sums of v·0 stay 0 exactly when every value is finite: a loop without branches or
/// early exit that vectorises with plain SSE2 (the sum is checked once per step and is almost always
/// finite; the earlier fold of `is_finite` compiled to two instructions per value).
fn all_finite(values: &[f32]) -> bool {
    let mut sums = [0.0f32; 16];
    let mut blocks = values.chunks_exact(16);
    for block in &mut blocks {
        for (sum, &v) in sums.iter_mut().zip(block) {
            *sum += v * 0.0;
        }
    }
    let rest = blocks.remainder().iter().fold(0.0f32, |sum, &v| sum + v * 0.0);
    sums.iter().fold(rest, |total, &sum| total + sum) == 0.0
}

#[cfg(test)]
mod tests {
    use super::all_finite;

    #[test]
    fn all_finite_finds_any_non_finite_value_anywhere() {
        for len in [0, 1, 15, 16, 17, 100, 1001] {
            let mut values: Vec<f32> = (0..len).map(|i| (i as f32 - 50.0) * 1e30).collect();
            assert!(all_finite(&values), "len {len}");
            for i in 0..len {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let kept = std::mem::replace(&mut values[i], bad);
                    assert!(!all_finite(&values), "len {len}, {bad} at {i}");
                    values[i] = kept;
                }
            }
        }
        assert!(all_finite(&[f32::MAX, -f32::MAX, f32::MIN_POSITIVE, -0.0]));
    }
}
