//! A positional linear layer's per-example gradients on the device: the same weight `W` (`d_out ×
//! d_in`) and bias applied at each of an example's `T` positions, so example `i`'s gradients are
//! `G_i = δ_iᵀ·X_i` (`X_i` its `T × d_in` input rows, `δ_i` its `T × d_out` output gradient rows) and
//! `Σ_t δ_{i,t}`. They are formed by one strided batch of products (the per-example stride `T·d`) and
//! δ's sums over time into the device's scratch, kept for the clipped sum, which is their weighted sum
//! (an example with factor 0 skipped, its NaN never read). The plain sum needs no per-example
//! gradients: `δᵀ·X` and δ's column sums over all `n·T` rows at once.
//!
//! The layer is described by spans and literal sizes only ([`Positional`]). [`Positional::norms`]
//! OVERWRITES its group's column, so it serves a layer that is its group's only tensor pair; attention,
//! whose group holds both projections, keeps its four tensors in one block of its own instead
//! (`attention.rs`).

use super::conv2d::batched;
use super::emit::{grad, lit, per_group, scratch};
use super::linear::{gemm, Product};
use super::scratch::PositionalScratch;
use crate::plan::memory::Stored;
use crate::plan::Plan;
use proc_macro2::TokenStream;
use quote::quote;

/// One positional layer as the device sees it.
pub struct Positional {
    /// The layer's input rows, `n × steps × inputs`.
    pub input: TokenStream,
    /// The gradient of its (pre-activation) output, `n × steps × outputs`.
    pub delta: TokenStream,
    /// Positions per example (`T`; 1 for a layer on a vector).
    pub steps: usize,
    pub inputs: usize,
    pub outputs: usize,
    /// The weight's parameter slot (`outputs × inputs`).
    pub weight: usize,
    /// The bias's parameter slot (`outputs`).
    pub bias: Option<usize>,
    /// The layer's clipping group.
    pub group: usize,
    /// Where its kept per-example gradients live ([`super::scratch::positional`]).
    pub kept: PositionalScratch,
}

impl Positional {
    /// Each example's kept weight gradient, `n × outputs·inputs`.
    fn kept_weight(&self) -> TokenStream {
        scratch(self.kept.weight, self.inputs * self.outputs, Stored::F32)
    }

    /// Each example's kept bias gradient, `n × outputs` (when the layer has a bias).
    fn kept_bias(&self) -> TokenStream {
        scratch(self.kept.bias, self.outputs, Stored::F32)
    }

    /// Each example's `δ_iᵀ·X_i` and `Σ_t δ_{i,t}` into the kept scratch, OVERWRITING it.
    fn per_example_gradients(&self) -> TokenStream {
        let (t, d_in, d_out) = (self.steps, self.inputs, self.outputs);
        let product = batched(
            (d_out, d_in, t),
            (self.delta.clone(), true, t * d_out),
            (self.input.clone(), false, t * d_in),
            (self.kept_weight(), d_in * d_out),
        );
        let bias = self.bias.map(|_| {
            let (delta, kept_b, tl, outs) = (&self.delta, self.kept_bias(), lit(t), lit(d_out));
            quote!(dev.sequence_sums(#delta, n, #tl, #outs, 1.0f32, #kept_b)?;)
        });
        quote!(#product #bias)
    }

    /// The per-example gradients, then their squared norms into column `group` of `SqNorms`
    /// (OVERWRITING it).
    pub fn norms(&self, plan: &Plan) -> TokenStream {
        let form = self.per_example_gradients();
        let (kept_w, wl) = (self.kept_weight(), lit(self.inputs * self.outputs));
        let bias = match self.bias {
            Some(_) => {
                let (kept_b, outs) = (self.kept_bias(), lit(self.outputs));
                quote!(::core::option::Option::Some((#kept_b, #outs)))
            }
            None => quote!(::core::option::Option::None),
        };
        let (sq, groups, group) = (per_group(plan, "SqNorms"), lit(plan.groups.len()), lit(self.group));
        quote! {
            #form
            dev.kept_sq_norms(#kept_w, #wl, #bias, n, #sq, #groups, #group)?;
        }
    }

    /// `Σ_i c_i·G_i` of the gradients the norms kept, ADDED into the weight's and bias's gradients.
    pub fn clipped_sum(&self, plan: &Plan) -> TokenStream {
        let (f, groups, group) = (per_group(plan, "Factors"), lit(plan.groups.len()), lit(self.group));
        let factors = quote!(::core::option::Option::Some((#f, #groups, #group)));
        let (kept_w, gw, wl) = (self.kept_weight(), grad(plan, self.weight), lit(self.inputs * self.outputs));
        let bias = self.bias.map(|slot| {
            let (kept_b, gb, outs) = (self.kept_bias(), grad(plan, slot), lit(self.outputs));
            quote!(dev.kept_weighted_sum(#kept_b, n, #outs, #factors, #gb)?;)
        });
        quote!(dev.kept_weighted_sum(#kept_w, n, #wl, #factors, #gw)?; #bias)
    }

    /// `δᵀ·X` and δ's column sums over all `n·T` rows, ADDED into the weight's and bias's gradients:
    /// the plain sum (f32 in every precision, as the CPU's).
    pub fn gradient_sum(&self, plan: &Plan) -> TokenStream {
        let (tl, d_in, d_out) = (lit(self.steps), lit(self.inputs), lit(self.outputs));
        let product = gemm(
            quote!(#d_out),
            quote!(#d_in),
            quote!(n * #tl),
            (self.delta.clone(), true),
            (self.input.clone(), false),
            grad(plan, self.weight),
            true,
            Product::GradientSum,
        );
        let bias = self.bias.map(|slot| {
            let (delta, gb) = (&self.delta, grad(plan, slot));
            quote!(dev.column_sums_add(#delta, n * #tl, #d_out, #gb)?;)
        });
        quote!(#product #bias)
    }
}
