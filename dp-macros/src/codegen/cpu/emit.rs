//! The vocabulary of the emitted CPU code: `n` (the batch size), `inputs`, `p` (the parameters),
//! `grad`, `sq_norms`, `factors` and the arena buffers `__b{k}` are the names the emitted statements
//! share; these helpers spell them.

use super::kernels;
use crate::ops::activation::function::Act;
use crate::plan::memory::{Buf, GradTarget};
use crate::plan::Plan;
use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::quote;

/// An unsuffixed integer literal.
pub fn lit(v: usize) -> Literal {
    Literal::usize_unsuffixed(v)
}

/// The rows of a layer's products applied at every position: `n` on a vector, `n * T` over a
/// sequence of `T` positions (the CPU and the device programs alike).
pub fn position_rows(positions: usize) -> TokenStream {
    match positions {
        1 => quote!(n),
        t => {
            let t = lit(t);
            quote!(n * #t)
        }
    }
}

/// The identifier of arena buffer `k`.
pub fn buf_ident(k: usize) -> Ident {
    Ident::new(&format!("__b{k}"), Span::call_site())
}

/// `let ([__b0, __b1, ...], __tasks) = carve(arena, n, &Self::__DP_BUFFERS);`: the plan's buffers,
/// then the rest of the arena, the per-task scratch ([`per_task_scratch`]).
pub fn carve(plan: &Plan, arena: TokenStream) -> TokenStream {
    let names = (0..plan.buffers.len()).map(buf_ident);
    let module = kernels::arena();
    quote! {
        let ([#(#names),*], __tasks) = #module::carve(#arena, n, &Self::__DP_BUFFERS);
    }
}

/// The per-task scratch after the plan's buffers: slots of one example's conv patches, as many as
/// the workspace holds (the kernels size their tasks by its length).
pub fn per_task_scratch(plan: &Plan) -> TokenStream {
    assert!(plan.scratch.patches_per_task > 0, "the planner sized the per-task scratch");
    quote!(&mut __tasks[..])
}

/// A buffer as a shared slice.
pub fn read(buf: Buf) -> TokenStream {
    match buf {
        Buf::Input => quote!(inputs),
        Buf::Arena(k) => {
            let b = buf_ident(k);
            quote!(&#b[..])
        }
    }
}

/// Arena buffer `k` as a mutable slice.
pub fn write(k: usize) -> TokenStream {
    let b = buf_ident(k);
    quote!(&mut #b[..])
}

/// A shared scratch buffer the planner sized.
pub fn scratch(k: Option<usize>) -> TokenStream {
    write(k.expect("the planner sized this scratch buffer"))
}

/// A shared scratch buffer that only some layers of a kind need (the conv rows, for folded convs
/// alone): an empty slice where no layer of the model needs it, which the kernels then never touch.
pub fn scratch_or_empty(k: Option<usize>) -> TokenStream {
    match k {
        Some(k) => write(k),
        None => quote!(&mut []),
    }
}

/// The kernels' `Activation` value of `a`.
pub fn act(a: Act) -> TokenStream {
    let (root, variant) = (kernels::root(), Ident::new(a.variant(), Span::call_site()));
    quote!(#root::Activation::#variant)
}

/// `&p[a..b]` for a parameter slot.
pub fn param(plan: &Plan, slot: usize) -> TokenStream {
    let s = &plan.params[slot];
    let (start, end) = (lit(s.offset), lit(s.offset + s.len));
    quote!(&p[#start..#end])
}

/// `Some(&p[..])` for an optional parameter slot (a bias).
pub fn optional_param(plan: &Plan, slot: Option<usize>) -> TokenStream {
    match slot {
        Some(slot) => {
            let b = param(plan, slot);
            quote!(::core::option::Option::Some(#b))
        }
        None => quote!(::core::option::Option::None),
    }
}

/// After a target was written: adds it into the input's own gradient when the input has other readers.
pub fn accumulate(t: GradTarget) -> TokenStream {
    match t.add_into {
        Some(g) => {
            let (g, w) = (buf_ident(g), buf_ident(t.write));
            quote! {
                for (g, t) in #g.iter_mut().zip(#w.iter()) {
                    *g += *t;
                }
            }
        }
        None => quote!(),
    }
}

/// `let (gw, gb) = ...` over the gradient buffer for a weight and its optional bias (stored after it).
pub fn grad_slices(plan: &Plan, weight: usize, bias: Option<usize>) -> TokenStream {
    let w = &plan.params[weight];
    let (start, wlen) = (lit(w.offset), lit(w.len));
    match bias {
        Some(slot) => {
            let end = lit(plan.params[slot].offset + plan.params[slot].len);
            quote! {
                let (gw, gb) = grad[#start..#end].split_at_mut(#wlen);
                let gb = ::core::option::Option::Some(gb);
            }
        }
        None => {
            let end = lit(w.offset + w.len);
            quote! {
                let gw = &mut grad[#start..#end];
                let gb = ::core::option::Option::None;
            }
        }
    }
}

/// `&mut grad[a..b]` over a parameter group's consecutive tensors `first..=last`.
pub fn grad_range(plan: &Plan, first: usize, last: usize) -> TokenStream {
    let (start, end) =
        (lit(plan.params[first].offset), lit(plan.params[last].offset + plan.params[last].len));
    quote!(&mut grad[#start..#end])
}

/// Zeroes group `group`'s column of `sq_norms`, before kernels that add into it.
pub fn zero_group(plan: &Plan, group: usize) -> TokenStream {
    let (groups, g) = (lit(plan.groups.len()), lit(group));
    quote! {
        for i in 0..n {
            sq_norms[i * #groups + #g] = 0.0;
        }
    }
}

/// The kernels' positional norm strategy.
pub fn strategy(s: dp_spec::Strategy) -> TokenStream {
    let module = kernels::per_example();
    match s {
        dp_spec::Strategy::Ghost => quote!(#module::Strategy::Ghost),
        dp_spec::Strategy::Direct => quote!(#module::Strategy::Direct),
    }
}

/// The clipped sum of a layer that kept its per-example gradients (arena buffer `kept`, `[B][len]` in
/// the order of the parameter tensors `first..=last` of group `group`): their weighted sum, examples
/// with factor 0 skipped.
pub fn kept_clipped_sum(plan: &Plan, kept: usize, group: usize, first: usize, last: usize) -> TokenStream {
    let (groups, g, len) = (lit(plan.groups.len()), lit(group), lit(plan.buffers[kept].len));
    let (grads, target, module) =
        (read(Buf::Arena(kept)), grad_range(plan, first, last), kernels::per_example());
    quote! {
        #module::stored_clipped_sum(n, #len, #grads, &factors[#g..], #groups, #target);
    }
}
