//! `embedding(dim = D, vocab = V)`: token ids `[T]` to rows `[T, D]` of a `[vocab, dim]` table.
//!
//! Its norm groups equal tokens ([`NormStrategy::TokenGrouped`], cost ~T·dim) and its clipped sum is
//! a scatter-add of `c_i·δ` rows: nothing of size vocab is ever formed per example. The vocabulary is
//! the token input's (`vocab` is checked against it).
//!
//! A `mean` over the sequence that alone reads it runs inside it ([`Planner::fuse_sequence_mean`]):
//! the pair's output is the mean, its gradient `[dim]` per example, and the norm needs only the
//! example's token counts (`dp_kernels::embedding_mean`).

use super::rules::OpRules;
use crate::args::{arguments, positive_int};
use crate::ctxt::Ctxt;
use crate::ir::view::NodeView;
use crate::plan::memory::{Buf, Stored};
use crate::plan::params::Init;
use crate::plan::planner::{Planner, SharedScratch};
use crate::shape::Shape;
use crate::syntax::{OpSyntax, Spanned};
use dp_spec::NormStrategy;

/// `embedding(dim = D, vocab = V)`.
#[derive(Debug, Clone, Copy)]
pub struct Embedding {
    pub dim: Spanned<usize>,
    pub declared_vocab: Option<Spanned<usize>>,
    /// The token input's vocabulary, filled in once the model's input is known (`None` on a dense
    /// input, which the checker rejects).
    pub vocab: Option<usize>,
}

/// A token embedding.
#[derive(Debug, Clone)]
pub struct EmbeddingStep {
    pub group: usize,
    pub vocab: usize,
    pub dim: usize,
    /// T: tokens per example.
    pub steps: usize,
    /// Index into `Plan::params`.
    pub weight: usize,
    /// Whether a sequence mean is fused in: `output` and `delta` are then `[dim]`, the mean's.
    pub mean: bool,
    /// `[T, dim]` rows looked up (`[dim]`, their mean, when fused).
    pub output: usize,
    /// The gradient of the output, of its length.
    pub delta: usize,
}

impl OpRules for Embedding {
    type Step = EmbeddingStep;
    const NAMES: &'static [&'static str] = &["embedding"];

    fn field_type(_: &str) -> &'static str {
        "Embedding"
    }

    fn parse(cx: &mut Ctxt, op: &OpSyntax) -> Option<Self> {
        let [dim, vocab] = arguments(cx, op, ["dim", "vocab"]);
        let declared_vocab = vocab.map(|a| positive_int(cx, "vocab", &a.value));
        let dim = match dim {
            Some(a) => positive_int(cx, "dim", &a.value),
            None => {
                cx.error(op.span(), "`embedding` needs its width: write `embedding(dim = D)`");
                None
            }
        };
        Some(Embedding {
            dim: dim?,
            declared_vocab: declared_vocab.map(|v| v.ok_or(())).transpose().ok()?,
            vocab: None,
        })
    }

    /// `[T]` token ids to `[T, dim]`; `None` (after the token check has reported why) when it does not
    /// read a token input.
    fn shape(&self, _: &mut Ctxt, _: &NodeView, inputs: &[&Shape]) -> Option<Shape> {
        self.vocab?;
        let x = inputs[0];
        (x.len() == 1).then(|| vec![x[0], self.dim.value])
    }

    fn param_count(&self, _: &[&Shape]) -> usize {
        self.vocab.unwrap_or(0) * self.dim.value
    }

    fn plan(&self, pl: &mut Planner<'_>, node: &NodeView) -> Option<EmbeddingStep> {
        let (i, x, field) = (node.index, node.input(), node.field);
        let (vocab, dim, steps) =
            (self.vocab.expect("checked: a token input"), self.dim.value, pl.shape(x)[0]);
        pl.target(node, x);
        let fused_mean = pl.fuse_sequence_mean(node);
        let (result, [output, delta], len, norm_scratch, flops) = match fused_mean {
            // The scatter-add and the norm's one row; the mean's adds are counted by the fusion.
            // Norm slot: the kernels' `embedding_mean::norm_scratch_len` (the emitted code asserts it).
            Some(mean) => (
                mean,
                ["mean", "mean delta"],
                dim,
                2 * (2 * steps).next_power_of_two() + dim,
                2 * steps * dim + 2 * dim,
            ),
            // Gather, the norm (row sums and squares) and the scatter-add of the clipped sum.
            None => (node.output, ["rows", "delta"], steps * dim, steps + dim, 5 * steps * dim),
        };
        let output = pl.alloc(i, Stored::OfPrecision, format!("{field} embedding {output}"), len);
        let delta = pl.alloc(i, Stored::OfPrecision, format!("{field} embedding {delta}"), len);
        pl.storage[result.0] = Some(Buf::Arena(output));
        pl.grad[result.0] = Some(delta);
        pl.need(SharedScratch::Norms, i, norm_scratch);
        let group = pl.group(field);
        let weight = pl.param(format!("{field}.weight"), vec![vocab, dim], Init::Normal { std: 1.0 });
        pl.cost(i, flops as u64, Some(NormStrategy::TokenGrouped));
        Some(EmbeddingStep { group, vocab, dim, steps, weight, mean: fused_mean.is_some(), output, delta })
    }
}
