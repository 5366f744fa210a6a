//! Hand-written `DpModel`s for testing the runtime without the compiler: softmax regression and a
//! two-layer ReLU MLP on 4 features and 3 classes, written with plain loops, with exact per-example
//! gradients. Also a synthetic, linearly separable 3-class problem.
#![allow(dead_code)]

use dp_runtime::model::{Batch, DpModel, LayerInfo, Loss, ParamSpec, Workspace};
use dp_runtime::Dataset;
use rand::{Rng, RngCore, SeedableRng};

pub const FEATURES: usize = 4;
pub const CLASSES: usize = 3;
pub const HIDDEN: usize = 8;

/// Softmax cross-entropy of one example: returns the loss and writes δ = softmax − onehot.
fn softmax_cross_entropy(logits: &[f32], label: f32, delta: &mut [f32]) -> f32 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0.0f32;
    for (d, &z) in delta.iter_mut().zip(logits) {
        *d = (z - max).exp();
        total += *d;
    }
    for d in delta.iter_mut() {
        *d /= total;
    }
    let class = label as usize;
    let loss = -(delta[class].max(1e-30)).ln();
    delta[class] -= 1.0;
    loss
}

fn uniform_init(rng: &mut dyn RngCore, fan_in: usize, out: &mut [f32]) {
    let bound = 1.0 / (fan_in as f32).sqrt();
    for v in out {
        *v = (rng.next_u32() as f32 / u32::MAX as f32 * 2.0 - 1.0) * bound;
    }
}

/// y = W x + b, W: [CLASSES, FEATURES].
pub struct SoftmaxRegression {
    pub params: Vec<f32>,
}

const W_LEN: usize = CLASSES * FEATURES;

impl DpModel for SoftmaxRegression {
    type Input = f32;
    const NAME: &'static str = "SoftmaxRegression";
    const INPUT_SHAPE: &'static [usize] = &[FEATURES];
    const VOCAB: usize = 0;
    const LOSS: Loss = Loss::CrossEntropy { classes: CLASSES };
    const PARAMS: &'static [ParamSpec] = &[
        ParamSpec { name: "fc.weight", shape: &[CLASSES, FEATURES], offset: 0, len: W_LEN, group: 0 },
        ParamSpec { name: "fc.bias", shape: &[CLASSES], offset: W_LEN, len: CLASSES, group: 0 },
    ];
    const PARAM_COUNT: usize = W_LEN + CLASSES;
    const GROUPS: &'static [&'static str] = &["fc"];
    const LAYERS: &'static [LayerInfo] = &[];
    const WORKSPACE_PER_EXAMPLE: usize = CLASSES;
    const WORKSPACE_FIXED: usize = 0;

    fn from_params(params: Vec<f32>) -> Self {
        SoftmaxRegression { params }
    }
    fn params(&self) -> &[f32] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }
    fn init(rng: &mut dyn RngCore) -> Self {
        let mut params = vec![0.0; Self::PARAM_COUNT];
        uniform_init(rng, FEATURES, &mut params);
        SoftmaxRegression { params }
    }

    fn forward(&self, _ws: &mut Workspace, inputs: &[f32], batch: usize, outputs: &mut [f32]) {
        let (w, b) = self.params.split_at(W_LEN);
        for i in 0..batch {
            let x = &inputs[i * FEATURES..(i + 1) * FEATURES];
            for k in 0..CLASSES {
                outputs[i * CLASSES + k] =
                    b[k] + (0..FEATURES).map(|j| w[k * FEATURES + j] * x[j]).sum::<f32>();
            }
        }
    }

    fn loss_and_gradient(
        &self,
        ws: &mut Workspace,
        batch: Batch<'_, f32>,
        losses: &mut [f32],
        grad: &mut [f32],
    ) {
        let mut sq = vec![0.0; batch.size];
        self.per_example_norms(ws, batch, losses, &mut sq);
        self.clipped_sum(ws, batch, &vec![1.0; batch.size], grad);
    }

    fn per_example_norms(
        &self,
        ws: &mut Workspace,
        batch: Batch<'_, f32>,
        losses: &mut [f32],
        sq_norms: &mut [f32],
    ) {
        ws.ensure::<Self>(batch.size);
        let mut logits = vec![0.0; batch.size * CLASSES];
        self.forward(ws, batch.inputs, batch.size, &mut logits);
        let arena = ws.arena();
        for i in 0..batch.size {
            let delta = &mut arena[i * CLASSES..(i + 1) * CLASSES];
            losses[i] =
                softmax_cross_entropy(&logits[i * CLASSES..(i + 1) * CLASSES], batch.labels[i], delta);
            let x = &batch.inputs[i * FEATURES..(i + 1) * FEATURES];
            let dd: f32 = delta.iter().map(|d| d * d).sum();
            let xx: f32 = x.iter().map(|v| v * v).sum();
            sq_norms[i] = dd * xx + dd;
        }
    }

    fn clipped_sum(&self, ws: &mut Workspace, batch: Batch<'_, f32>, factors: &[f32], grad: &mut [f32]) {
        let arena = ws.arena();
        for i in 0..batch.size {
            let c = factors[i];
            if c == 0.0 {
                continue;
            }
            let x = &batch.inputs[i * FEATURES..(i + 1) * FEATURES];
            for k in 0..CLASSES {
                let d = c * arena[i * CLASSES + k];
                for j in 0..FEATURES {
                    grad[k * FEATURES + j] += d * x[j];
                }
                grad[W_LEN + k] += d;
            }
        }
    }
}

/// fc2(relu(fc1 x)), fc1: [HIDDEN, FEATURES], fc2: [CLASSES, HIDDEN]; two parameter groups.
pub struct Mlp {
    pub params: Vec<f32>,
}

const W1: usize = HIDDEN * FEATURES;
const B1: usize = W1;
const W2: usize = B1 + HIDDEN;
const B2: usize = W2 + CLASSES * HIDDEN;
/// Workspace per example: hidden activations, δ of the hidden layer, δ of the logits.
const MLP_WS: usize = 2 * HIDDEN + CLASSES;

impl Mlp {
    fn hidden_and_logits(&self, x: &[f32], hidden: &mut [f32], logits: &mut [f32]) {
        let p = &self.params;
        for h in 0..HIDDEN {
            let z = p[B1 + h] + (0..FEATURES).map(|j| p[h * FEATURES + j] * x[j]).sum::<f32>();
            hidden[h] = z.max(0.0);
            if z.is_nan() {
                hidden[h] = f32::NAN;
            }
        }
        for k in 0..CLASSES {
            logits[k] = p[B2 + k] + (0..HIDDEN).map(|h| p[W2 + k * HIDDEN + h] * hidden[h]).sum::<f32>();
        }
    }
}

impl DpModel for Mlp {
    type Input = f32;
    const NAME: &'static str = "Mlp";
    const INPUT_SHAPE: &'static [usize] = &[FEATURES];
    const VOCAB: usize = 0;
    const LOSS: Loss = Loss::CrossEntropy { classes: CLASSES };
    const PARAMS: &'static [ParamSpec] = &[
        ParamSpec { name: "fc1.weight", shape: &[HIDDEN, FEATURES], offset: 0, len: W1, group: 0 },
        ParamSpec { name: "fc1.bias", shape: &[HIDDEN], offset: B1, len: HIDDEN, group: 0 },
        ParamSpec {
            name: "fc2.weight",
            shape: &[CLASSES, HIDDEN],
            offset: W2,
            len: CLASSES * HIDDEN,
            group: 1,
        },
        ParamSpec { name: "fc2.bias", shape: &[CLASSES], offset: B2, len: CLASSES, group: 1 },
    ];
    const PARAM_COUNT: usize = B2 + CLASSES;
    const GROUPS: &'static [&'static str] = &["fc1", "fc2"];
    const LAYERS: &'static [LayerInfo] = &[];
    const WORKSPACE_PER_EXAMPLE: usize = MLP_WS;
    const WORKSPACE_FIXED: usize = 0;

    fn from_params(params: Vec<f32>) -> Self {
        Mlp { params }
    }
    fn params(&self) -> &[f32] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }
    fn init(rng: &mut dyn RngCore) -> Self {
        let mut params = vec![0.0; Self::PARAM_COUNT];
        uniform_init(rng, FEATURES, &mut params[..W2]);
        uniform_init(rng, HIDDEN, &mut params[W2..]);
        Mlp { params }
    }

    fn forward(&self, _ws: &mut Workspace, inputs: &[f32], batch: usize, outputs: &mut [f32]) {
        let mut hidden = [0.0; HIDDEN];
        for i in 0..batch {
            let x = &inputs[i * FEATURES..(i + 1) * FEATURES];
            self.hidden_and_logits(x, &mut hidden, &mut outputs[i * CLASSES..(i + 1) * CLASSES]);
        }
    }

    fn loss_and_gradient(
        &self,
        ws: &mut Workspace,
        batch: Batch<'_, f32>,
        losses: &mut [f32],
        grad: &mut [f32],
    ) {
        let mut sq = vec![0.0; batch.size * 2];
        self.per_example_norms(ws, batch, losses, &mut sq);
        self.clipped_sum(ws, batch, &vec![1.0; batch.size * 2], grad);
    }

    fn per_example_norms(
        &self,
        ws: &mut Workspace,
        batch: Batch<'_, f32>,
        losses: &mut [f32],
        sq_norms: &mut [f32],
    ) {
        ws.ensure::<Self>(batch.size);
        let p = &self.params;
        let arena = ws.arena();
        for i in 0..batch.size {
            let x = &batch.inputs[i * FEATURES..(i + 1) * FEATURES];
            let slot = &mut arena[i * MLP_WS..(i + 1) * MLP_WS];
            let (hidden, rest) = slot.split_at_mut(HIDDEN);
            let (delta1, delta2) = rest.split_at_mut(HIDDEN);
            let mut logits = [0.0; CLASSES];
            self.hidden_and_logits(x, hidden, &mut logits);
            losses[i] = softmax_cross_entropy(&logits, batch.labels[i], delta2);
            for h in 0..HIDDEN {
                let back: f32 = (0..CLASSES).map(|k| p[W2 + k * HIDDEN + h] * delta2[k]).sum();
                delta1[h] = if hidden[h].is_nan() {
                    f32::NAN
                } else if hidden[h] > 0.0 {
                    back
                } else {
                    0.0
                };
            }
            let d1: f32 = delta1.iter().map(|d| d * d).sum();
            let d2: f32 = delta2.iter().map(|d| d * d).sum();
            let xx: f32 = x.iter().map(|v| v * v).sum();
            let hh: f32 = hidden.iter().map(|v| v * v).sum();
            sq_norms[2 * i] = d1 * xx + d1;
            sq_norms[2 * i + 1] = d2 * hh + d2;
        }
    }

    fn clipped_sum(&self, ws: &mut Workspace, batch: Batch<'_, f32>, factors: &[f32], grad: &mut [f32]) {
        let arena = ws.arena();
        for i in 0..batch.size {
            let (c1, c2) = (factors[2 * i], factors[2 * i + 1]);
            if c1 == 0.0 && c2 == 0.0 {
                continue;
            }
            let x = &batch.inputs[i * FEATURES..(i + 1) * FEATURES];
            let slot = &arena[i * MLP_WS..(i + 1) * MLP_WS];
            let (hidden, rest) = slot.split_at(HIDDEN);
            let (delta1, delta2) = rest.split_at(HIDDEN);
            if c1 != 0.0 {
                for h in 0..HIDDEN {
                    let d = c1 * delta1[h];
                    for j in 0..FEATURES {
                        grad[h * FEATURES + j] += d * x[j];
                    }
                    grad[B1 + h] += d;
                }
            }
            if c2 != 0.0 {
                for k in 0..CLASSES {
                    let d = c2 * delta2[k];
                    for h in 0..HIDDEN {
                        grad[W2 + k * HIDDEN + h] += d * hidden[h];
                    }
                    grad[B2 + k] += d;
                }
            }
        }
    }
}

/// `n` examples of a 3-class problem: class k centred at 3·e_k (plus a constant 4th feature of 1),
/// unit-variance noise, separable by a linear model with high accuracy.
pub fn separable(n: usize, seed: u64) -> Dataset<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut inputs = Vec::with_capacity(n * FEATURES);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % CLASSES;
        for j in 0..FEATURES {
            let centre = if j == class { 3.0 } else { 0.0 };
            let noise: f32 = if j == FEATURES - 1 { 0.0 } else { rng.random::<f32>() * 2.0 - 1.0 };
            inputs.push(if j == FEATURES - 1 { 1.0 } else { centre + noise });
        }
        labels.push(class as f32);
    }
    Dataset::new(inputs, labels, vec![FEATURES], 1).unwrap()
}

/// Each example's true gradient in f64 (one example at a time, from the definition), for checks.
pub fn softmax_gradient_f64(params: &[f32], x: &[f32], label: usize) -> Vec<f64> {
    let mut logits = [0.0f64; CLASSES];
    for k in 0..CLASSES {
        logits[k] = params[W_LEN + k] as f64
            + (0..FEATURES).map(|j| params[k * FEATURES + j] as f64 * x[j] as f64).sum::<f64>();
    }
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = logits.iter().map(|z| (z - max).exp()).sum();
    let mut grad = vec![0.0; W_LEN + CLASSES];
    for k in 0..CLASSES {
        let d = (logits[k] - max).exp() / total - if k == label { 1.0 } else { 0.0 };
        for j in 0..FEATURES {
            grad[k * FEATURES + j] = d * x[j] as f64;
        }
        grad[W_LEN + k] = d;
    }
    grad
}
