//! The device program's own per-example scratch, after the plan's buffers in plan order (the device
//! places both by their storage class, [`super::layout`]): the patches
//! of one convolution at a time (shared by every conv, re-derived by each pass that reads them, and
//! reused for the patch gradients backward), then every trained conv's per-example weight and bias
//! gradients, formed by its norms and kept for its clipped sum (the bias's only, for a conv by the
//! ghost norm: [`ghost_on_device`]), then every LSTM's per-example
//! gradients (both weights, then the bias), kept the same way, with the operand of its recurrent
//! products (stored in the precision), then every positional layer's (a linear
//! layer over a sequence or with direct norms: weight, then bias; [`super::positional`]) that the
//! plan does not keep already (those the CPU keeps live in the plan's kept buffer). A device has
//! the memory for them (the CIFAR-10 CNN keeps 0.26 MB per example, its ghost convs none; the LSTM
//! model 0.3 MB), and keeping
//! them saves the clipped sum a second product. Then the per-position affine gradients of one layer
//! norm over a sequence at a time (`rows × 2·dim`), summed over the rows by its backward into the
//! plan's per-example affine gradients. Then every attention layer's score gradients (all heads) and
//! its four tensors' per-example gradients. Then one trained conv's output gradient at a time with
//! its examples side by side, for the plain sum's one weight-gradient product (non-private steps).
//! Last, a ghost conv's two Gram matrices per example, and its clipped sum's f32 operands (patches and
//! scaled output gradient, each with the batch folded into the columns), one conv at a time.

use crate::ops::attention::AttentionStep;
use crate::ops::conv2d::ConvStep;
use crate::ops::linear::DenseStep;
use crate::ops::lstm::LstmStep;
use crate::ops::norm_layer::NormDims;
use crate::ops::Step;
use crate::plan::memory::Stored;
use crate::plan::Plan;

use super::layout::{Block, Layout};

/// Where a conv's scratch lives, in values per example from the arena's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvScratch {
    /// The patches (forward, norms) or patch gradients (backward): `patch_len × positions`.
    pub cols: usize,
    /// Each example's weight gradient, `out_c × patch_len`.
    pub weight: usize,
    /// Each example's bias gradient, `out_c`, when the conv has a bias.
    pub bias: usize,
}

/// Where an LSTM's kept gradients and its recurrent products' operand live, in values per example
/// from the arena's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LstmScratch {
    /// Each example's `W_ih` then `W_hh` gradient, `4h × d + 4h × h`: laid out as the two weights in
    /// the parameters, so one weighted sum covers both.
    pub weights: usize,
    /// Each example's bias gradient, `4h`.
    pub bias: usize,
    /// The operand of a time step's recurrent product, `4h`: `h_{t−1}` forward, the step's gate
    /// gradients backward. Only that product reads it, and in bf16 it rounds its operands, so this
    /// is stored in the precision (the rest of the recurrence stays f32): a device storing in bf16
    /// then converts nothing at each time step.
    pub operand: usize,
}

/// Where a positional layer's kept gradients live, in values per example from the arena's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositionalScratch {
    /// Each example's weight gradient, `d_out × d_in`.
    pub weight: usize,
    /// Each example's bias gradient, `d_out`, when the layer has a bias.
    pub bias: usize,
}

/// A linear layer that keeps per-example gradients on the device: over a sequence, or with direct
/// norms (the Goodfellow identity serves a ghost layer at one position).
pub fn keeps_positional(d: &DenseStep) -> bool {
    d.positions != 1 || d.kept.is_some() || d.strategy != dp_spec::Strategy::Ghost
}

/// Every trained positional layer's weight slot (its identity) and kept length per example (weight,
/// then bias), in step order, that keeps its gradients in the device's scratch: not a frozen layer
/// (no norms: nothing to keep), nor one whose gradients the plan keeps (the device keeps them in the
/// plan's buffer, [`positional`]).
fn positionals(plan: &Plan) -> impl Iterator<Item = (usize, usize)> + '_ {
    plan.steps.iter().filter_map(|s| match s {
        Step::Linear(d) if keeps_positional(d) && d.kept.is_none() && plan.params[d.weight].trained => {
            Some((d.weight, d.inputs * d.outputs + if d.bias.is_some() { d.outputs } else { 0 }))
        }
        _ => None,
    })
}

/// Where an attention layer's scratch lives, in values per example from the arena's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionScratch {
    /// The score gradients of every head, `heads × T × T` (laid out as the probabilities): `dP`,
    /// then `scale·dS` in place. The norms and the plain sum reuse its first `T` values for a row of
    /// ones (the bias gradients' sums over positions).
    pub scores: usize,
    /// Each example's gradients of `in_proj_weight`, `in_proj_bias`, `out_proj.weight` and
    /// `out_proj.bias`, `4d² + 4d`, in the parameters' order: one norm and one weighted sum cover
    /// all four.
    pub kept: usize,
}

fn convs(plan: &Plan) -> impl Iterator<Item = &ConvStep> {
    plan.steps.iter().filter_map(|s| match s {
        Step::Conv2d(c) => Some(c),
        _ => None,
    })
}

/// The convs whose weight is trained (a frozen one has no norms and no sums).
fn trained_convs(plan: &Plan) -> impl Iterator<Item = &ConvStep> {
    convs(plan).filter(|c| plan.params[c.weight].trained)
}

fn lstms(plan: &Plan) -> impl Iterator<Item = &LstmStep> {
    plan.steps.iter().filter_map(|s| match s {
        Step::Lstm(l) => Some(l),
        _ => None,
    })
}

fn attentions(plan: &Plan) -> impl Iterator<Item = &AttentionStep> {
    plan.steps.iter().filter_map(|s| match s {
        Step::Attention(a) => Some(a),
        _ => None,
    })
}

/// The four tensors of an attention layer, per example.
pub fn attention_kept_len(s: &AttentionStep) -> usize {
    4 * s.dim * s.dim + 4 * s.dim
}

fn attention_len(s: &AttentionStep) -> usize {
    s.heads * s.steps * s.steps + attention_kept_len(s)
}

/// The plan's own buffers, per example.
fn plan_len(plan: &Plan) -> usize {
    plan.buffers.iter().map(|b| b.offset + b.len).max().unwrap_or(0)
}

fn shared_cols_len(plan: &Plan) -> usize {
    convs(plan).map(|c| c.geom.patches_len()).max().unwrap_or(0)
}

/// Whether the device takes conv `c`'s norm by the ghost norm (from two Gram matrices per example,
/// its per-example weight gradients never formed): where the planner chose it, for an ungrouped conv.
/// A grouped conv keeps its gradients whatever the planner chose.
pub fn ghost_on_device(c: &ConvStep) -> bool {
    c.strategy == dp_spec::Strategy::Ghost && c.geom.groups == 1
}

/// The per-example weight gradient a conv keeps: none for a ghost norm.
fn kept_weight_len(c: &ConvStep) -> usize {
    if ghost_on_device(c) {
        0
    } else {
        c.geom.weight_len()
    }
}

/// A conv's kept per-example gradients: the weight's (unless by the ghost norm), then the bias's.
fn kept_len(c: &ConvStep) -> usize {
    kept_weight_len(c) + if c.bias.is_some() { c.geom.out_c } else { 0 }
}

/// Both weights' gradients of an LSTM, per example.
pub fn lstm_weights_len(s: &LstmStep) -> usize {
    s.dims.weight_ih_len() + s.dims.weight_hh_len()
}

/// An LSTM's kept gradients and its recurrent products' operand, per example.
fn lstm_kept_len(s: &LstmStep) -> usize {
    lstm_weights_len(s) + 4 * s.dims.hidden + 4 * s.dims.hidden
}

/// Where the LSTMs' kept gradients start: after the convs'.
fn lstms_start(plan: &Plan) -> usize {
    plan_len(plan) + shared_cols_len(plan) + convs(plan).map(kept_len).sum::<usize>()
}

/// Where the positional layers' kept gradients start: after the LSTMs'.
fn positionals_start(plan: &Plan) -> usize {
    lstms_start(plan) + lstms(plan).map(lstm_kept_len).sum::<usize>()
}

/// Where the layer norms' per-position affine gradients live in the device's arena.
pub fn sequence_affine(plan: &Plan) -> usize {
    Layout::of(plan).offset(sequence_affine_at(plan), sequence_affine_len(plan))
}

/// Where the layer norms' per-position affine gradients start in plan order: after the positional
/// layers'.
fn sequence_affine_at(plan: &Plan) -> usize {
    positionals_start(plan) + positionals(plan).map(|(_, len)| len).sum::<usize>()
}

/// The largest per-position affine gradients of a layer norm over a sequence, per example.
fn sequence_affine_len(plan: &Plan) -> usize {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::Norm(n) => match n.dims {
                NormDims::Layer { rows, dim } => Some(rows * 2 * dim),
                NormDims::Group { .. } => None,
            },
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// The arena per example in plan order: the plan's buffers and the device's scratch.
pub(super) fn arena_len(plan: &Plan) -> usize {
    ghost_folded_at(plan) + ghost_folded_len(plan)
}

/// Where a ghost conv's clipped sum lays out its operands in f32 (its patches with the batch folded
/// into the columns, then its output gradient's examples side by side, scaled by the factors): the
/// scaled gradient stays f32 on its way into the sum, as a kept one does, in every precision.
pub fn ghost_folded(plan: &Plan) -> usize {
    Layout::of(plan).offset(ghost_folded_at(plan), ghost_folded_len(plan))
}

/// Where the ghost convs' folded operands start in plan order: after the Gram matrices.
fn ghost_folded_at(plan: &Plan) -> usize {
    grams_at(plan) + grams_len(plan)
}

/// The largest patches and output of a trained ghost conv, per example.
fn ghost_folded_len(plan: &Plan) -> usize {
    trained_convs(plan)
        .filter(|c| ghost_on_device(c))
        .map(|c| c.geom.patches_len() + c.geom.output_len())
        .max()
        .unwrap_or(0)
}

/// Where a ghost conv's two Gram matrices per example (`δ_iᵀδ_i`, then `P_iᵀP_i`, `T × T` each) live
/// in the device's arena: one conv's at a time.
pub fn grams(plan: &Plan) -> usize {
    Layout::of(plan).offset(grams_at(plan), grams_len(plan))
}

/// Where the Gram matrices start in plan order: after the folded output gradient.
fn grams_at(plan: &Plan) -> usize {
    folded_delta_at(plan) + folded_delta_len(plan)
}

/// The largest two Gram matrices of a trained ghost conv, per example.
fn grams_len(plan: &Plan) -> usize {
    trained_convs(plan)
        .filter(|c| ghost_on_device(c))
        .map(|c| 2 * c.geom.positions() * c.geom.positions())
        .max()
        .unwrap_or(0)
}

/// Where a trained conv's output gradient with its examples side by side lives in the device's arena
/// (`channels × (n·positions)`, the operand of the plain sum's one weight-gradient product:
/// [`super::conv2d::gradient_sum`]).
pub fn folded_delta(plan: &Plan) -> usize {
    Layout::of(plan).offset(folded_delta_at(plan), folded_delta_len(plan))
}

/// Where the folded output gradient starts in plan order: after the attention layers' scratch.
fn folded_delta_at(plan: &Plan) -> usize {
    attentions_start(plan) + attentions(plan).map(attention_len).sum::<usize>()
}

/// The largest output of a trained conv, per example (one conv's at a time).
fn folded_delta_len(plan: &Plan) -> usize {
    trained_convs(plan).map(|c| c.geom.output_len()).max().unwrap_or(0)
}

/// Where the attention layers' scratch starts in plan order: after the layer norms' affine
/// gradients.
fn attentions_start(plan: &Plan) -> usize {
    sequence_affine_at(plan) + sequence_affine_len(plan)
}

/// The scratch of conv `step` (compared by identity: its weight slot) in the device's arena.
pub fn conv(plan: &Plan, step: &ConvStep) -> ConvScratch {
    let (layout, at) = (Layout::of(plan), conv_at(plan, step));
    let kept = at.bias - at.weight;
    ConvScratch {
        cols: layout.offset(at.cols, shared_cols_len(plan)),
        weight: layout.offset(at.weight, kept),
        bias: layout.offset(at.bias, kept_len(step) - kept),
    }
}

/// [`conv`] in plan order.
fn conv_at(plan: &Plan, step: &ConvStep) -> ConvScratch {
    let cols = plan_len(plan);
    let mut at = cols + shared_cols_len(plan);
    for c in convs(plan) {
        if c.weight == step.weight {
            return ConvScratch { cols, weight: at, bias: at + kept_weight_len(c) };
        }
        at += kept_len(c);
    }
    unreachable!("{step:?} is a step of its plan")
}

/// The kept gradients of LSTM `step` (compared by identity: its input weight slot) in the device's
/// arena.
pub fn lstm(plan: &Plan, step: &LstmStep) -> LstmScratch {
    let (layout, at) = (Layout::of(plan), lstm_at(plan, step));
    let g4 = 4 * step.dims.hidden;
    LstmScratch {
        weights: layout.offset(at.weights, lstm_weights_len(step)),
        bias: layout.offset(at.bias, g4),
        operand: layout.offset(at.operand, g4),
    }
}

/// [`lstm`] in plan order.
fn lstm_at(plan: &Plan, step: &LstmStep) -> LstmScratch {
    let mut at = lstms_start(plan);
    for s in lstms(plan) {
        if s.w_ih == step.w_ih {
            let bias = at + lstm_weights_len(s);
            return LstmScratch { weights: at, bias, operand: bias + 4 * s.dims.hidden };
        }
        at += lstm_kept_len(s);
    }
    unreachable!("{step:?} is a step of its plan")
}

/// The kept gradients of the positional layer whose weight is parameter `weight` (its identity): in
/// the plan's kept buffer when the CPU's plan keeps them too (its length per example is the weight's
/// and the bias's, which the device lays out as all the weights, then all the biases), in the
/// device's scratch otherwise; in the device's arena.
pub fn positional(plan: &Plan, weight: usize) -> PositionalScratch {
    let (layout, at) = (Layout::of(plan), positional_at(plan, weight));
    let w = plan.params[weight].len;
    let bias_len = plan
        .steps
        .iter()
        .find_map(|s| match s {
            Step::Linear(d) if d.weight == weight => Some(if d.bias.is_some() { d.outputs } else { 0 }),
            _ => None,
        })
        .unwrap_or(0);
    PositionalScratch { weight: layout.offset(at.weight, w), bias: layout.offset(at.bias, bias_len) }
}

/// [`positional`] in plan order.
fn positional_at(plan: &Plan, weight: usize) -> PositionalScratch {
    let planned = plan.steps.iter().find_map(|s| match s {
        Step::Linear(d) if d.weight == weight => {
            d.kept.map(|k| (plan.buffers[k].offset, d.inputs * d.outputs))
        }
        _ => None,
    });
    if let Some((offset, weight_len)) = planned {
        return PositionalScratch { weight: offset, bias: offset + weight_len };
    }
    let mut at = positionals_start(plan);
    for (slot, len) in positionals(plan) {
        if slot == weight {
            let w = &plan.params[weight];
            return PositionalScratch { weight: at, bias: at + w.len };
        }
        at += len;
    }
    unreachable!("parameter {weight} is the weight of a positional layer of its plan")
}

/// The scratch of attention layer `step` (compared by identity: its input weight slot) in the
/// device's arena.
pub fn attention(plan: &Plan, step: &AttentionStep) -> AttentionScratch {
    let (layout, at) = (Layout::of(plan), attention_at(plan, step));
    AttentionScratch {
        scores: layout.offset(at.scores, step.heads * step.steps * step.steps),
        kept: layout.offset(at.kept, attention_kept_len(step)),
    }
}

/// [`attention`] in plan order.
fn attention_at(plan: &Plan, step: &AttentionStep) -> AttentionScratch {
    let mut at = attentions_start(plan);
    for s in attentions(plan) {
        if s.in_weight == step.in_weight {
            return AttentionScratch { scores: at, kept: at + s.heads * s.steps * s.steps };
        }
        at += attention_len(s);
    }
    unreachable!("{step:?} is a step of its plan")
}

/// The device's scratch as blocks in plan order (after the plan's buffers), each of one storage
/// class, for [`Layout`]: the shared patches, each conv's kept gradients, each LSTM's kept gradients
/// and its recurrent products' operand, each positional layer's kept gradients (those the plan does
/// not keep), the layer norms' per-position affine gradients, each attention layer's scores and its
/// kept gradients.
pub fn blocks(plan: &Plan) -> Vec<Block> {
    let mut blocks = vec![Block {
        offset: plan_len(plan),
        len: shared_cols_len(plan),
        stored: Stored::OfPrecision,
        read_in_f32: false,
    }];
    for c in convs(plan) {
        let at = conv_at(plan, c);
        blocks.push(Block { offset: at.weight, len: kept_len(c), stored: Stored::F32, read_in_f32: true });
    }
    for l in lstms(plan) {
        let at = lstm_at(plan, l);
        let g4 = 4 * l.dims.hidden;
        blocks.push(Block {
            offset: at.weights,
            len: lstm_weights_len(l) + g4,
            stored: Stored::F32,
            read_in_f32: true,
        });
        blocks.push(Block { offset: at.operand, len: g4, stored: Stored::OfPrecision, read_in_f32: true });
    }
    let mut at = positionals_start(plan);
    for (_, len) in positionals(plan) {
        blocks.push(Block { offset: at, len, stored: Stored::F32, read_in_f32: true });
        at += len;
    }
    blocks.push(Block {
        offset: sequence_affine_at(plan),
        len: sequence_affine_len(plan),
        stored: Stored::F32,
        read_in_f32: true,
    });
    for a in attentions(plan) {
        let at = attention_at(plan, a);
        blocks.push(Block {
            offset: at.scores,
            len: a.heads * a.steps * a.steps,
            stored: Stored::OfPrecision,
            read_in_f32: true,
        });
        blocks.push(Block {
            offset: at.kept,
            len: attention_kept_len(a),
            stored: Stored::F32,
            read_in_f32: true,
        });
    }
    // Read only by the conv's product in the precision, as the patches are.
    blocks.push(Block {
        offset: folded_delta_at(plan),
        len: folded_delta_len(plan),
        stored: Stored::OfPrecision,
        read_in_f32: false,
    });
    // Written by products, read by the norms' kernel only.
    blocks.push(Block {
        offset: grams_at(plan),
        len: grams_len(plan),
        stored: Stored::F32,
        read_in_f32: false,
    });
    // Read by the ghost convs' clipped sums, f32 products.
    blocks.push(Block {
        offset: ghost_folded_at(plan),
        len: ghost_folded_len(plan),
        stored: Stored::F32,
        read_in_f32: true,
    });
    blocks
}
