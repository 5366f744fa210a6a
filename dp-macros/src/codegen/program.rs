//! The forward and backward programs: one kernel call per step, literal dimensions, buffers carved
//! from the arena at the plan's offsets. `n` (the batch size), `inputs`, `p` (the parameters) and the
//! buffers `__b{k}` are the names the emitted statements share.

use crate::parse::ast::LossKind;
use crate::plan::{Act, Buf, DenseStep, Plan, Step};
use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::quote;

/// An unsuffixed integer literal.
pub fn lit(v: usize) -> Literal {
    Literal::usize_unsuffixed(v)
}

/// The identifier of arena buffer `k`.
pub fn buf_ident(k: usize) -> Ident {
    Ident::new(&format!("__b{k}"), Span::call_site())
}

/// `let [__b0, __b1, ...] = carve(arena, n, &Self::__DP_BUFFERS);`
pub fn carve(plan: &Plan, arena: TokenStream) -> TokenStream {
    let names = (0..plan.buffers.len()).map(buf_ident);
    quote! {
        let [#(#names),*] = ::dp::__private::kernels::arena::carve(#arena, n, &Self::__DP_BUFFERS);
    }
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

fn act(a: Act) -> TokenStream {
    match a {
        Act::Identity => quote!(::dp::__private::kernels::Activation::Identity),
        Act::Relu => quote!(::dp::__private::kernels::Activation::Relu),
        Act::Tanh => quote!(::dp::__private::kernels::Activation::Tanh),
        Act::Sigmoid => quote!(::dp::__private::kernels::Activation::Sigmoid),
    }
}

/// `&p[a..b]` for a parameter slot.
pub fn param(plan: &Plan, slot: usize) -> TokenStream {
    let s = &plan.params[slot];
    let (start, end) = (lit(s.offset), lit(s.offset + s.len));
    quote!(&p[#start..#end])
}

/// The forward program: every step's kernel in order.
pub fn forward(plan: &Plan) -> TokenStream {
    let steps = plan.steps.iter().map(|step| match step {
        Step::Dense(d) => {
            let (a, w, y) = (read(d.input), param(plan, d.weight), write(d.output));
            let bias = match d.bias {
                Some(slot) => {
                    let b = param(plan, slot);
                    quote!(::core::option::Option::Some(#b))
                }
                None => quote!(::core::option::Option::None),
            };
            let (n_in, n_out, f) = (lit(d.inputs), lit(d.outputs), act(d.act));
            quote! {
                ::dp::__private::kernels::dense::linear_forward(#a, #w, #bias, n, #n_in, #n_out, #f, #y);
            }
        }
        Step::Activation(s) => {
            let (x, y, len, f) = (read(s.input), write(s.output), lit(s.len), act(s.act));
            quote!(::dp::__private::kernels::activation::activation_forward(#x, #y, n * #len, #f);)
        }
        _ => super::conv::forward(plan, step),
    });
    quote!(#(#steps)*)
}

/// The loss and its gradient, then the backward program: steps in reverse, each output gradient δ
/// left in its layer's buffer for the norms and the clipped sum.
pub fn backward(plan: &Plan, loss: LossKind) -> TokenStream {
    let out = read(plan.output);
    let g = write(plan.output_grad);
    let loss = match loss {
        LossKind::CrossEntropy { classes } => {
            let k = lit(classes.value);
            quote!(::dp::__private::kernels::loss::softmax_cross_entropy(#out, labels, n, #k, losses, #g);)
        }
        LossKind::BinaryCrossEntropy => {
            quote!(::dp::__private::kernels::loss::binary_cross_entropy_with_logits(#out, labels, n, losses, #g);)
        }
        LossKind::MeanSquaredError => {
            let k = lit(plan.output_len);
            quote!(::dp::__private::kernels::loss::mean_squared_error(#out, labels, n, #k, losses, #g);)
        }
    };
    let steps = plan.steps.iter().rev().map(|step| match step {
        Step::Dense(d) => {
            let n_out = lit(d.outputs);
            let act_back = (d.act != Act::Identity).then(|| {
                let (delta, y, f) = (write(d.delta), read(Buf::Arena(d.output)), act(d.act));
                quote!(::dp::__private::kernels::activation::activation_backward(#delta, #y, n * #n_out, #f);)
            });
            let input_grad = d.input_grad.map(|t| {
                let (delta, w, ga, n_in) =
                    (read(Buf::Arena(d.delta)), param(plan, d.weight), write(t.write), lit(d.inputs));
                let acc = super::conv::accumulate(t);
                quote!(::dp::__private::kernels::dense::linear_input_grad(#delta, #w, n, #n_in, #n_out, #ga); #acc)
            });
            quote!(#act_back #input_grad)
        }
        Step::Activation(s) => match s.grad {
            Some(gk) if s.target.is_some() => {
                super::conv::activation_to_target(s, gk, s.target.expect("checked"))
            }
            Some(gk) => {
                let (g, y, len, f) = (write(gk), read(Buf::Arena(s.output)), lit(s.len), act(s.act));
                quote!(::dp::__private::kernels::activation::activation_backward(#g, #y, n * #len, #f);)
            }
            None => quote!(),
        },
        _ => super::conv::backward(plan, step),
    });
    quote!(#loss #(#steps)*)
}

/// The dense steps, for the per-layer gradient passes.
pub fn dense_steps(plan: &Plan) -> impl Iterator<Item = &DenseStep> {
    plan.steps.iter().filter_map(|s| match s {
        Step::Dense(d) => Some(d),
        _ => None,
    })
}

/// `let (gw, gb) = ...` splitting the gradient buffer into the layer's weight and bias gradients.
fn grad_slices(plan: &Plan, d: &DenseStep) -> TokenStream {
    let w = &plan.params[d.weight];
    let (start, wlen) = (lit(w.offset), lit(w.len));
    match d.bias {
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

/// Non-private accumulation: grad += Σ_i g_i, one GEMM per layer.
pub fn gradient_sum(plan: &Plan) -> TokenStream {
    let others = plan.steps.iter().map(|step| super::conv::gradient(plan, step, false));
    let layers = dense_steps(plan).map(|d| {
        let (a, delta, n_in, n_out) =
            (read(d.input), read(Buf::Arena(d.delta)), lit(d.inputs), lit(d.outputs));
        let slices = grad_slices(plan, d);
        quote! {{
            #slices
            ::dp::__private::kernels::dense::linear_grad_add(#a, #delta, n, #n_in, #n_out, gw, gb);
        }}
    });
    quote!(#(#layers)* #(#others)*)
}

/// Per-example squared norms of every group, from the kept activations and output gradients.
pub fn norms(plan: &Plan) -> TokenStream {
    let groups = lit(plan.groups.len());
    let others = plan.steps.iter().map(|step| super::conv::norms(plan, step));
    let layers = dense_steps(plan).map(|d| {
        if d.strategy == crate::plan::NormStrategy::Direct {
            return super::conv::dense_direct_norms(plan, d);
        }
        let (a, delta, n_in, n_out) =
            (read(d.input), read(Buf::Arena(d.delta)), lit(d.inputs), lit(d.outputs));
        let (has_bias, group) = (d.bias.is_some(), lit(d.group));
        quote! {
            ::dp::__private::kernels::dense::linear_ghost_sq_norms(
                #a, #delta, n, #n_in, #n_out, #has_bias, sq_norms, #groups, #group,
            );
        }
    });
    quote!(#(#layers)* #(#others)*)
}

/// The clipped sum by book-keeping: per layer one GEMM over the rows of δ scaled by the factors.
pub fn clipped_sum(plan: &Plan) -> TokenStream {
    let others = plan.steps.iter().map(|step| super::conv::gradient(plan, step, true));
    let groups = lit(plan.groups.len());
    let scratch = buf_ident(plan.clip_scratch);
    let layers = dense_steps(plan).map(|d| {
        let (a, delta, n_in, n_out) =
            (read(d.input), read(Buf::Arena(d.delta)), lit(d.inputs), lit(d.outputs));
        let slices = grad_slices(plan, d);
        let group = lit(d.group);
        quote! {{
            #slices
            let (scratch_a, scratch_delta) = #scratch.split_at_mut(n * #n_in);
            ::dp::__private::kernels::dense::linear_clipped_grad_add(
                #a, #delta, n, #n_in, #n_out, factors, #groups, #group, scratch_a, scratch_delta, gw, gb,
            );
        }}
    });
    quote!(#(#layers)* #(#others)*)
}
