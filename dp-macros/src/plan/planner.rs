//! The planner's services to the ops: the cross-op work that every op's plan step needs and none
//! should copy.
//!
//! - Memory: [`Planner::alloc`] gives an arena buffer and counts its bytes at the node that asks.
//! - Gradient routing: a value read by more than one op (a residual connection) has its own gradient
//!   buffer; the last reader in forward order (the first in the backward) writes it, every earlier
//!   reader writes a temporary buffer that is then added into it ([`Planner::target`]). In-place
//!   gradient sharing (an activation or a flatten working on its input's gradient) needs a single
//!   reader ([`Planner::sole_reader`]).
//! - Fusion: an activation that is the only reader of a layer's output runs in that layer's output
//!   pass when its derivative can be taken from the output ([`Planner::fuse_activation`]); its input
//!   is then never stored. A sequence mean that alone reads an embedding becomes one op with it
//!   ([`Planner::fuse_sequence_mean`]): the `[T, dim]` rows and their gradient are never stored.
//! - Scratch sharing: the δ rows and norm slots of the kernels are one buffer each, sized to the
//!   largest need of any layer ([`Planner::need`]); the patches are one slot per task, of the largest
//!   layer's size, after the per-example plan.
//! - Kept gradients: a direct layer applied at several positions keeps the per-example gradients its
//!   norm forms, for a clipped sum without a second product, while the model's total stays under
//!   `dp_spec::cost::KEPT_GRADIENTS_CAP_BYTES` ([`Planner::kept_gradients`]); the others fall back
//!   to the book-keeping product, decided here and shown in the plan table.
//! - Parameters and groups ([`Planner::group`], [`Planner::param`]), and each node's row of the plan
//!   table: FLOPs and norm strategy ([`Planner::cost`]).

use super::memory::{Buf, Buffer, GradTarget, Stored};
use super::params::{Init, ParamSlot, NO_GROUP};
use crate::args::NormChoice;
use crate::ir::value::ValueId;
use crate::ir::view::NodeView;
use crate::ir::Fusion;
use crate::ops::activation::function::Act;
use crate::shape::Shape;
use dp_spec::cost::{keeps_gradients, DIRECT_MEMORY_CAP_BYTES};
use dp_spec::{NormStrategy, PositionalLayer, Strategy};

/// A scratch buffer shared by the kernels of several layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedScratch {
    /// Conv patches (im2col) of one example, per task; also the slots of the conv input-gradient
    /// kernel. Not per example: the workspace holds a few slots per thread after the plan.
    Patches,
    /// Conv output gradients as rows, and the output of a conv whose chunks fold (`conv_folded`).
    Rows,
    /// Slots of the per-example norm kernels.
    Norms,
}

/// The planner's state while the driver walks the graph.
pub struct Planner<'g> {
    shapes: &'g [Shape],
    pub buffers: Vec<Buffer>,
    pub per_example: usize,
    /// Where each value lives (planned before any reader).
    pub storage: Vec<Option<Buf>>,
    /// The gradient buffer of each value, when it has one.
    pub grad: Vec<Option<usize>>,
    /// Readers of each value (the loss counts as one reader of the output).
    pub uses: Vec<usize>,
    seen: Vec<usize>,
    temps: Vec<Option<usize>>,
    /// Whether a value depends on a trained parameter (and so needs a gradient).
    pub needs_grad: Vec<bool>,
    /// For each node, the node that alone reads its output and may be fused into it.
    fusable: Vec<Option<Fusion>>,
    fused: Vec<bool>,
    pub params: Vec<ParamSlot>,
    pub groups: Vec<String>,
    /// Elements of trained tensors so far (their offsets count from 0).
    pub trained_len: usize,
    /// Elements of frozen tensors so far (their offsets count from 0 until [`Planner::lay_out_params`]
    /// moves them after the trained ones).
    frozen_len: usize,
    /// Whether the node being planned is frozen: its group and tensors are not trained.
    pub frozen: bool,
    pub layer_bytes: Vec<u64>,
    pub layer_flops: Vec<u64>,
    pub layer_strategy: Vec<Option<NormStrategy>>,
    /// Whether each node keeps its per-example gradients for the clipped sum.
    pub layer_kept: Vec<bool>,
    /// Bytes per example of the per-example gradients kept so far.
    kept_bytes: u64,
    /// Largest per-example need (and the node that has it) of each shared scratch buffer.
    scratch_needs: [(usize, usize); 3],
    /// The widest `in + out` of any linear layer (the last at a tie), for the clipping scratch.
    clip_need: Option<(usize, usize)>,
}

impl<'g> Planner<'g> {
    /// A planner over values of `shapes`, with the graph facts the driver derived.
    pub fn new(
        shapes: &'g [Shape],
        uses: Vec<usize>,
        needs_grad: Vec<bool>,
        fusable: Vec<Option<Fusion>>,
    ) -> Self {
        let (values, nodes) = (shapes.len(), fusable.len());
        Planner {
            shapes,
            buffers: Vec::new(),
            per_example: 0,
            storage: vec![None; values],
            grad: vec![None; values],
            uses,
            seen: vec![0; values],
            temps: vec![None; values],
            needs_grad,
            fusable,
            fused: vec![false; nodes],
            params: Vec::new(),
            groups: Vec::new(),
            trained_len: 0,
            frozen_len: 0,
            frozen: false,
            layer_bytes: vec![0; nodes],
            layer_flops: vec![0; nodes],
            layer_strategy: vec![None; nodes],
            layer_kept: vec![false; nodes],
            kept_bytes: 0,
            scratch_needs: [(0, 0); 3],
            clip_need: None,
        }
    }

    /// Allocates an arena buffer of `len` per example, stored as `stored` says, counted in node
    /// `node`'s bytes. Every buffer gets offsets of its own (none reused by a later buffer): a GPU
    /// storing in bf16 converts a product's operand into the span's slot in its other store, which is
    /// safe only while no other buffer lives there (dp-cuda's `program/memory.rs`).
    pub fn alloc(&mut self, node: usize, stored: Stored, purpose: String, len: usize) -> usize {
        self.layer_bytes[node] += 4 * len as u64;
        self.buffers.push(Buffer { purpose, offset: self.per_example, len, stored });
        self.per_example += len;
        self.buffers.len() - 1
    }

    /// The shape of one example of `v`.
    pub fn shape(&self, v: ValueId) -> &'g Shape {
        &self.shapes[v.0]
    }

    /// Values of one example of `v`.
    pub fn width(&self, v: ValueId) -> usize {
        self.shapes[v.0].iter().product()
    }

    /// Where value `v` lives (planned before any reader).
    pub fn storage_of(&self, v: ValueId) -> Buf {
        self.storage[v.0].expect("inputs are planned before their readers")
    }

    /// The gradient target of one reading of `x` by `node` (call once per reading, in forward order);
    /// `None` when nothing upstream of `x` is trained.
    pub fn target(&mut self, node: &NodeView, x: ValueId) -> Option<GradTarget> {
        self.seen[x.0] += 1;
        let own = self.grad[x.0].filter(|_| self.needs_grad[x.0])?;
        if self.seen[x.0] == self.uses[x.0] {
            return Some(GradTarget { write: own, add_into: None });
        }
        let temp = match self.temps[x.0] {
            Some(t) => t,
            None => {
                let t = self.alloc(
                    node.index,
                    Stored::OfPrecision,
                    format!("{} partial gradient", node.field),
                    self.width(x),
                );
                self.temps[x.0] = Some(t);
                t
            }
        };
        Some(GradTarget { write: temp, add_into: Some(own) })
    }

    /// Whether `node` is the only reader of `x`, so that its backward may work in place on `x`'s
    /// gradient; counts the reading either way (instead of [`Planner::target`]).
    pub fn sole_reader(&mut self, x: ValueId) -> bool {
        self.seen[x.0] += 1;
        self.uses[x.0] == 1
    }

    /// The output gradient buffer of a new value, if it needs one.
    pub fn grad_buffer(&mut self, node: usize, v: ValueId, purpose: String) -> Option<usize> {
        self.needs_grad[v.0].then(|| self.alloc(node, Stored::OfPrecision, purpose, self.width(v)))
    }

    /// The activation fused into `node`'s output pass and the value the pass then produces:
    /// `(Act::Identity, node.output)` when there is none. A fused node is not planned on its own; its
    /// cost (one forward and one backward operation per element) is counted here.
    pub fn fuse_activation(&mut self, node: &NodeView) -> (Act, ValueId) {
        match self.fusable[node.index] {
            Some(Fusion::Activation(act, output)) => {
                self.fused[node.index + 1] = true;
                self.layer_flops[node.index + 1] = 2 * self.width(output) as u64;
                (act, output)
            }
            Some(Fusion::SequenceMean(_)) | None => (Act::Identity, node.output),
        }
    }

    /// The output of the sequence mean fused into embedding `node`, if one is; its cost (the forward's
    /// adds, one per element of the rows it averages) is counted here.
    pub fn fuse_sequence_mean(&mut self, node: &NodeView) -> Option<ValueId> {
        match self.fusable[node.index] {
            Some(Fusion::SequenceMean(output)) => {
                self.fused[node.index + 1] = true;
                self.layer_flops[node.index + 1] = self.width(node.output) as u64;
                Some(output)
            }
            Some(Fusion::Activation(..)) | None => None,
        }
    }

    /// Whether node `i` was fused into the node before it.
    pub fn is_fused(&self, i: usize) -> bool {
        self.fused[i]
    }

    /// Opens the parameter group of `field` (one per trained parameterised layer); returns its index,
    /// or [`NO_GROUP`] for a frozen layer.
    pub fn group(&mut self, field: &str) -> usize {
        if self.frozen {
            return NO_GROUP;
        }
        self.groups.push(field.to_string());
        self.groups.len() - 1
    }

    /// Registers a parameter tensor of the node being planned: in the newest group, or frozen when the
    /// node is.
    pub fn param(&mut self, name: String, shape: Vec<usize>, init: Init) -> usize {
        let trained = !self.frozen;
        self.push_param(name, shape, init, trained)
    }

    fn push_param(&mut self, name: String, shape: Vec<usize>, init: Init, trained: bool) -> usize {
        let len: usize = shape.iter().product();
        let (offset, group) = match trained {
            true => (self.trained_len, self.groups.len() - 1),
            false => (self.frozen_len, NO_GROUP),
        };
        match trained {
            true => self.trained_len += len,
            false => self.frozen_len += len,
        }
        self.params.push(ParamSlot { name, shape, offset, len, group, init, trained });
        self.params.len() - 1
    }

    /// Moves the frozen tensors after the trained ones (trained-first layout); returns the length of
    /// the whole buffer. Steps name tensors by index, so they are unaffected.
    pub fn lay_out_params(&mut self) -> usize {
        let trained = self.trained_len;
        self.params.iter_mut().filter(|p| !p.trained).for_each(|p| p.offset += trained);
        trained + self.frozen_len
    }

    /// Records that node `node` needs `len` values per example of a shared scratch buffer.
    pub fn need(&mut self, scratch: SharedScratch, node: usize, len: usize) {
        let slot = &mut self.scratch_needs[scratch as usize];
        if len > slot.0 {
            *slot = (len, node);
        }
    }

    /// Records a linear layer's `in + out` for the clipping scratch (`c⊙Δ` and the masked input).
    pub fn need_clip_scratch(&mut self, node: usize, len: usize) {
        if self.clip_need.is_none_or(|(widest, _)| len >= widest) {
            self.clip_need = Some((len, node));
        }
    }

    /// The norm strategy of a positional layer: the user's (`norms = ghost | direct`), or the cheaper
    /// under the direct norm's per-example memory cap.
    pub fn strategy(forced: Option<NormChoice>, layer: &PositionalLayer) -> Strategy {
        match forced {
            Some(NormChoice::Ghost) => Strategy::Ghost,
            Some(NormChoice::Direct) => Strategy::Direct,
            None => layer.choose_strategy(DIRECT_MEMORY_CAP_BYTES),
        }
    }

    /// The buffer that keeps `node`'s per-example gradients (`len` values per example: the whole
    /// group's gradient in parameter-buffer order) when its norm, computed with `strategy` at
    /// `positions` positions, forms them and they fit the model's cap
    /// ([`dp_spec::cost::keeps_gradients`], in forward order); `None` keeps the book-keeping clipped
    /// sum. A frozen layer has no norms and keeps nothing.
    pub fn kept_gradients(
        &mut self,
        node: usize,
        field: &str,
        strategy: Strategy,
        positions: usize,
        len: usize,
    ) -> Option<usize> {
        let bytes = 4 * len as u64;
        if self.frozen || !keeps_gradients(strategy, positions, bytes, self.kept_bytes) {
            return None;
        }
        self.kept_bytes += bytes;
        self.layer_kept[node] = true;
        Some(self.alloc(node, Stored::F32, format!("{field} kept per-example gradients"), len))
    }

    /// The node's FLOPs per example and, for a parameterised node, its norm strategy.
    pub fn cost(&mut self, node: usize, flops: u64, strategy: Option<NormStrategy>) {
        self.layer_flops[node] = flops;
        self.layer_strategy[node] = strategy;
    }

    /// Allocates the shared buffers, each counted at the node that sets its size: the clipping scratch
    /// (always, possibly empty), then the rows and norm slots that some layer needs. The patches are
    /// not in the per-example plan: returns their length per task (0 when no layer unfolds), the
    /// slot each task of the conv passes unfolds one example into, at the end of the arena.
    pub fn allocate_shared(&mut self) -> (usize, usize, [Option<usize>; 2]) {
        let (len, node) = self.clip_need.unwrap_or((0, 0));
        let clip = self.alloc(node, Stored::F32, "clipping scratch".to_string(), len);
        let purposes = [
            (SharedScratch::Rows, "conv output gradient rows"),
            (SharedScratch::Norms, "per-example norm scratch"),
        ];
        let mut shared = [None; 2];
        for (k, (scratch, purpose)) in purposes.into_iter().enumerate() {
            let (len, node) = self.scratch_needs[scratch as usize];
            if len > 0 {
                shared[k] = Some(self.alloc(node, Stored::F32, purpose.to_string(), len));
            }
        }
        (clip, self.scratch_needs[SharedScratch::Patches as usize].0, shared)
    }
}
