//! `embedding(dim = D)` on the device. Its ids are the batch's `Tokens`; nothing upstream of them is
//! trained, so it has no backward.
//!
//! - Averaged over the sequence (`embedding(dim = D), mean`): a summing gather forward, norms from
//!   each example's token counts, and a scatter-add of one row per example for the clipped and the
//!   plain sums.
//! - Over the sequence (its rows read by a later step, e.g. an LSTM): a gather forward, token-grouped
//!   norms (the rows of one example's repeated ids add up before squaring, as its table gradient's
//!   row is their sum), and a scatter-add of every position's row.

use super::emit::{arena, grad, lit, param, per_group, region};
use crate::ops::embedding::EmbeddingStep;
use crate::plan::Plan;
use proc_macro2::TokenStream;
use quote::quote;

fn ids(s: &EmbeddingStep) -> TokenStream {
    let t = lit(s.steps);
    region(quote!(Tokens), quote!(0), quote!(n * #t))
}

pub fn forward(plan: &Plan, s: &EmbeddingStep) -> TokenStream {
    let (t, v, d) = (lit(s.steps), lit(s.vocab), lit(s.dim));
    let (ids, table, out) = (ids(s), param(plan, s.weight), arena(plan, s.output));
    match s.mean {
        true => quote!(dev.embedding_mean_forward(#ids, #table, n, #t, #v, #d, #out)?;),
        false => quote!(dev.embedding_forward(#ids, #table, n, #t, #v, #d, #out)?;),
    }
}

pub fn norms(plan: &Plan, s: &EmbeddingStep) -> TokenStream {
    let (t, d, groups, group) = (lit(s.steps), lit(s.dim), lit(plan.groups.len()), lit(s.group));
    let (ids, delta, sq) = (ids(s), arena(plan, s.delta), per_group(plan, "SqNorms"));
    match s.mean {
        true => quote!(dev.embedding_mean_norms(#ids, #delta, n, #t, #d, #sq, #groups, #group)?;),
        false => quote!(dev.embedding_norms(#ids, #delta, n, #t, #d, #sq, #groups, #group)?;),
    }
}

/// The scatter-add, weighted by the factors (`clipped`) or not.
pub fn sum(plan: &Plan, s: &EmbeddingStep, clipped: bool) -> TokenStream {
    let (t, v, d) = (lit(s.steps), lit(s.vocab), lit(s.dim));
    let (ids, delta, g) = (ids(s), arena(plan, s.delta), grad(plan, s.weight));
    let factors = match clipped {
        true => {
            let (f, groups, group) = (per_group(plan, "Factors"), lit(plan.groups.len()), lit(s.group));
            quote!(::core::option::Option::Some((#f, #groups, #group)))
        }
        false => quote!(::core::option::Option::None),
    };
    match s.mean {
        true => quote!(dev.embedding_mean_scatter(#ids, #delta, n, #t, #v, #d, #factors, #g)?;),
        false => quote!(dev.embedding_scatter(#ids, #delta, n, #t, #v, #d, #factors, #g)?;),
    }
}
