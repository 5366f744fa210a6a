//! Augmentation multiplicity (De et al. 2022) in a step: each sampled example is seen as K random
//! views, and its contribution is the average of the views' gradients, clipped as one vector.
//!
//! One example's views go through the model in one call (its non-private pass: the summed gradient is
//! all that is needed, no per-view norm). Examples are independent, so blocks of them run in parallel,
//! each on a worker with its own workspace; the blocks' partial sums are added in block order and the
//! views are drawn up front in batch order, so the result does not depend on the number of threads.

use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

use super::step::BatchStats;
use crate::clipping::{clip_factors, ClipMode};
use crate::data::augment::{Augmentation, ImageShape, ViewChoice};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{Batch, DpModel, Precision, Workspace};

/// Examples per block: one worker sums a block's clipped averages in order. Small enough that a batch
/// of a few hundred examples keeps every core busy, large enough that a block's partial sum (one
/// gradient) is amortised over many examples.
const EXAMPLES_PER_BLOCK: usize = 16;

/// The views of one training run: how many per example, how they are drawn, and the workers.
pub struct Views<M: DpModel> {
    count: usize,
    augmentation: Augmentation,
    shape: ImageShape,
    padding: M::Input,
    rng: ChaCha20Rng,
    clip_norm: f64,
    clip_mode: ClipMode,
    /// The trained parameters of each group, as (offset, length, group): the averaged gradient's norm
    /// is taken group by group, as the model's `per_example_norms` reports it.
    group_ranges: Vec<(usize, usize, usize)>,
    /// The views of the current batch, `count` per example, in batch order.
    choices: Vec<ViewChoice>,
    workers: Vec<Worker<M::Input>>,
    /// The precision of the workers' products.
    precision: Precision,
}

/// One worker's buffers: a workspace for one example's views, and its block's partial sum.
struct Worker<T> {
    workspace: Workspace,
    inputs: Vec<T>,
    labels: Vec<f32>,
    losses: Vec<f32>,
    /// One example's clipped average.
    gradient: Vec<f32>,
    /// The block's sum of clipped averages.
    partial: Vec<f32>,
    group_sq_norms: Vec<f32>,
    group_factors: Vec<f32>,
    stats: BatchStats,
}

impl<M: DpModel> Views<M> {
    /// `count` views per example drawn by `augmentation` from `rng`, clipped to `clip_norm` in
    /// `clip_mode`. Refused for inputs that are not images, `count` = 0, and more views than
    /// `max_chunk` (the examples one model call may hold within the memory budget).
    pub fn new(
        count: usize,
        augmentation: Augmentation,
        rng: ChaCha20Rng,
        clip_norm: f64,
        clip_mode: ClipMode,
        max_chunk: usize,
    ) -> Result<Self> {
        let shape = augmentation.check_input(M::INPUT_SHAPE, M::VOCAB)?;
        let padding = augmentation.padding_as::<M::Input>()?;
        if count == 0 {
            return Err(Error::invalid("augmentation_multiplicity", "needs at least 1 view per example"));
        }
        if count > max_chunk {
            return Err(Error::invalid(
                "augmentation_multiplicity",
                format!(
                    "{count} views of one example do not fit one physical chunk, which holds {max_chunk} \
                     examples at a time (the memory budget and max_physical_batch); raise them or take \
                     fewer views"
                ),
            ));
        }
        let group_ranges =
            M::PARAMS.iter().filter(|p| p.is_trained()).map(|p| (p.offset, p.len, p.group)).collect();
        Ok(Views {
            count,
            augmentation,
            shape,
            padding,
            rng,
            clip_norm,
            clip_mode,
            group_ranges,
            choices: Vec::new(),
            workers: Vec::new(),
            precision: Precision::F32,
        })
    }

    /// The workers' products in `precision` ([`Workspace::with_precision`]).
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
        for worker in &mut self.workers {
            worker.workspace = std::mem::take(&mut worker.workspace).with_precision(precision);
        }
    }

    /// Adds every example's clipped average over its views into `sum` (`TRAINED_PARAM_COUNT` long).
    pub fn clipped_sum(
        &mut self,
        model: &M,
        data: &Dataset<M::Input>,
        indices: &[usize],
        sum: &mut [f32],
        stats: &mut BatchStats,
    ) -> Result<()> {
        self.draw(indices.len());
        let blocks: Vec<&[usize]> = indices.chunks(EXAMPLES_PER_BLOCK).collect();
        let wave = rayon::current_num_threads().max(1);
        self.grow_workers(wave.min(blocks.len()));
        let per_example = self.count;
        let (job, workers) = self.split();
        for (wave_index, wave_blocks) in blocks.chunks(wave).enumerate() {
            let first_block = wave_index * wave;
            let workers = &mut workers[..wave_blocks.len()];
            let results: Vec<Result<()>> = workers
                .par_iter_mut()
                .zip(wave_blocks.par_iter())
                .enumerate()
                .map(|(k, (worker, block))| {
                    let start = (first_block + k) * EXAMPLES_PER_BLOCK * per_example;
                    let choices = &job.choices[start..start + block.len() * per_example];
                    worker.partial.fill(0.0);
                    worker.stats = BatchStats::default();
                    for (&index, choices) in block.iter().zip(choices.chunks_exact(per_example)) {
                        if worker.clipped_average(&job, model, data, index, choices)? {
                            for (p, &g) in worker.partial.iter_mut().zip(&worker.gradient) {
                                *p += g;
                            }
                        }
                    }
                    Ok(())
                })
                .collect();
            // In block order, whatever the threads did first.
            for (worker, result) in workers.iter().zip(results) {
                result?;
                for (s, &p) in sum.iter_mut().zip(&worker.partial) {
                    *s += p;
                }
                stats.loss_sum += worker.stats.loss_sum;
                stats.loss_count += worker.stats.loss_count;
                stats.non_finite += worker.stats.non_finite;
            }
        }
        Ok(())
    }

    /// Calls `add` with every example's clipped average over its views, in batch order (secure mode,
    /// which rounds each example onto its grid); `add` returns false for an example it refused.
    pub fn for_each_clipped_average(
        &mut self,
        model: &M,
        data: &Dataset<M::Input>,
        indices: &[usize],
        stats: &mut BatchStats,
        mut add: impl FnMut(&[f32]) -> Result<bool>,
    ) -> Result<()> {
        self.draw(indices.len());
        self.grow_workers(1);
        let (job, workers) = self.split();
        let worker = &mut workers[0];
        worker.stats = BatchStats::default();
        for (&index, choices) in indices.iter().zip(job.choices.chunks_exact(job.count)) {
            if worker.clipped_average(&job, model, data, index, choices)? && !add(&worker.gradient)? {
                worker.stats.non_finite += 1;
            }
        }
        stats.loss_sum += worker.stats.loss_sum;
        stats.loss_count += worker.stats.loss_count;
        stats.non_finite += worker.stats.non_finite;
        Ok(())
    }

    /// Draws the views of the batch at `indices`, as [`clipped_sum`](Self::clipped_sum) does, and
    /// writes them augmented into `inputs` and their labels into `labels`: `count` views per example,
    /// example-major (what a device's step with views takes).
    pub fn gather(
        &mut self,
        data: &Dataset<M::Input>,
        indices: &[usize],
        inputs: &mut Vec<M::Input>,
        labels: &mut Vec<f32>,
    ) {
        self.draw(indices.len());
        let (job, _) = self.split();
        let views_len = job.count * data.example_len();
        inputs.resize(indices.len() * views_len, M::Input::default());
        labels.clear();
        for ((&index, choices), views) in
            indices.iter().zip(job.choices.chunks_exact(job.count)).zip(inputs.chunks_exact_mut(views_len))
        {
            job.augment(data, index, choices, views, labels);
        }
    }

    /// The views per example.
    pub fn count(&self) -> usize {
        self.count
    }

    /// What the workers read, beside the workers themselves.
    fn split(&mut self) -> (Job<'_, M::Input>, &mut [Worker<M::Input>]) {
        let job = Job {
            padding: self.padding,
            count: self.count,
            augmentation: self.augmentation,
            shape: self.shape,
            clip_norm: self.clip_norm,
            clip_mode: self.clip_mode,
            group_ranges: &self.group_ranges,
            choices: &self.choices,
        };
        (job, &mut self.workers)
    }

    /// The views of a batch of `examples`, in batch order: the same whatever runs them.
    fn draw(&mut self, examples: usize) {
        self.choices.clear();
        for _ in 0..examples * self.count {
            self.choices.push(self.augmentation.choose(&mut self.rng));
        }
    }

    fn grow_workers(&mut self, workers: usize) {
        while self.workers.len() < workers {
            self.workers.push(Worker {
                workspace: Workspace::new::<M>(self.count).with_precision(self.precision),
                inputs: Vec::new(),
                labels: Vec::new(),
                losses: vec![0.0; self.count],
                gradient: vec![0.0; M::TRAINED_PARAM_COUNT],
                partial: vec![0.0; M::TRAINED_PARAM_COUNT],
                group_sq_norms: vec![0.0; M::GROUPS.len()],
                group_factors: vec![0.0; M::GROUPS.len()],
                stats: BatchStats::default(),
            });
        }
    }
}

/// What every worker reads, borrowed from [`Views`] beside its workers.
struct Job<'a, T> {
    padding: T,
    count: usize,
    augmentation: Augmentation,
    shape: ImageShape,
    clip_norm: f64,
    clip_mode: ClipMode,
    group_ranges: &'a [(usize, usize, usize)],
    choices: &'a [ViewChoice],
}

impl<T: crate::model::InputElem> Job<'_, T> {
    /// Example `index` seen as the views `choices`: each augmented into its image of `views` (one
    /// image per choice), and the example's label appended to `labels` once per view.
    fn augment(
        &self,
        data: &Dataset<T>,
        index: usize,
        choices: &[ViewChoice],
        views: &mut [T],
        labels: &mut Vec<f32>,
    ) {
        let image = data.input(index);
        for (view, &choice) in views.chunks_exact_mut(image.len()).zip(choices) {
            self.augmentation.apply(self.shape, choice, image, view, self.padding);
            labels.extend_from_slice(data.label(index));
        }
    }
}

impl<T: crate::model::InputElem> Worker<T> {
    /// Example `index`'s gradient averaged over the views `choices` and clipped, into `gradient`.
    /// Returns false, and counts the example as non-finite, when the average is not finite (a
    /// non-finite view makes it so): the example then contributes nothing.
    fn clipped_average<M: DpModel<Input = T>>(
        &mut self,
        job: &Job<'_, T>,
        model: &M,
        data: &Dataset<T>,
        index: usize,
        choices: &[ViewChoice],
    ) -> Result<bool> {
        self.inputs.resize(job.count * data.example_len(), T::default());
        self.labels.clear();
        job.augment(data, index, choices, &mut self.inputs, &mut self.labels);
        // The views' summed gradient in one forward and backward pass, then 1/K for the average.
        self.gradient.fill(0.0);
        let batch = Batch { inputs: &self.inputs, labels: &self.labels, size: job.count };
        model.loss_and_gradient(&mut self.workspace, batch, &mut self.losses, &mut self.gradient);
        let average = 1.0 / job.count as f32;
        for g in &mut self.gradient {
            *g *= average;
        }
        // Its norm, group by group, and its clip factors.
        self.group_sq_norms.fill(0.0);
        for &(offset, len, group) in job.group_ranges {
            let sq: f64 = self.gradient[offset..offset + len].iter().map(|&g| (g as f64) * (g as f64)).sum();
            self.group_sq_norms[group] += sq as f32;
        }
        let groups = self.group_sq_norms.len();
        if clip_factors(job.clip_mode, job.clip_norm, groups, &self.group_sq_norms, &mut self.group_factors)?
            > 0
        {
            self.stats.non_finite += 1;
            return Ok(false);
        }
        for &(offset, len, group) in job.group_ranges {
            let factor = self.group_factors[group];
            for g in &mut self.gradient[offset..offset + len] {
                *g *= factor;
            }
        }
        let loss = self.losses.iter().map(|&l| l as f64).sum::<f64>() / job.count as f64;
        if loss.is_finite() {
            self.stats.loss_sum += loss;
            self.stats.loss_count += 1;
        }
        Ok(true)
    }
}
