//! Emission of the image steps (conv, pooling, global pooling, norm layers, `+`), of gradient
//! accumulation for values with several readers, and of direct norms for linear layers.
//!
//! Conv patches and δ rows live in shared scratch and are re-derived by each pass that reads them
//! (`im2col` from the kept input, `output_grad_to_rows` from the kept NCHW δ), chunk by chunk inside
//! `dp_kernels::conv_chunks`.

use super::program::{buf_ident, param, read, write};
use crate::parse::ast::PoolKind;
use crate::plan::conv::{ConvGeom, NormDims, NormStep, PoolStep};
use crate::plan::{Act, ActivationStep, Buf, DenseStep, GradCopyStep, GradTarget, NormStrategy, Plan, Step};
use proc_macro2::TokenStream;
use quote::quote;

fn lit(v: usize) -> proc_macro2::Literal {
    proc_macro2::Literal::usize_unsuffixed(v)
}

/// `::dp::__private::kernels::...`
fn k() -> TokenStream {
    quote!(::dp::__private::kernels)
}

pub fn act(a: Act) -> TokenStream {
    let k = k();
    match a {
        Act::Identity => quote!(#k::Activation::Identity),
        Act::Relu => quote!(#k::Activation::Relu),
        Act::Tanh => quote!(#k::Activation::Tanh),
        Act::Sigmoid => quote!(#k::Activation::Sigmoid),
    }
}

fn strategy(s: NormStrategy) -> TokenStream {
    let k = k();
    match s {
        NormStrategy::Ghost => quote!(#k::per_example::Strategy::Ghost),
        NormStrategy::Direct => quote!(#k::per_example::Strategy::Direct),
        NormStrategy::TokenGrouped => unreachable!("embeddings are not positional layers"),
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

fn scratch(k: Option<usize>) -> TokenStream {
    write(k.expect("the planner sized this scratch buffer"))
}

fn geom(g: &ConvGeom) -> TokenStream {
    let k = k();
    let (in_c, in_h, in_w, out_c, kernel) =
        (lit(g.in_c), lit(g.in_h), lit(g.in_w), lit(g.out_c), lit(g.kernel));
    let (stride, padding, dilation, groups) = (lit(g.stride), lit(g.padding), lit(g.dilation), lit(g.groups));
    quote! {
        #k::conv::Conv2dGeometry {
            in_c: #in_c, in_h: #in_h, in_w: #in_w, out_c: #out_c, kh: #kernel, kw: #kernel,
            stride: #stride, padding: #padding, dilation: #dilation, groups: #groups,
        }
    }
}

fn pool_geom(s: &PoolStep) -> TokenStream {
    let k = k();
    let (c, h, w) = (lit(s.channels), lit(s.in_h), lit(s.in_w));
    let (kernel, stride, padding) = (lit(s.kernel), lit(s.stride), lit(s.padding));
    quote! {
        #k::pool::Pool2dGeometry { channels: #c, in_h: #h, in_w: #w, kernel: #kernel, stride: #stride, padding: #padding }
    }
}

fn norm_call(dims: NormDims, group: &str) -> (TokenStream, TokenStream) {
    let k = k();
    match dims {
        NormDims::Group { channels, plane, groups } => {
            let (c, p, g) = (lit(channels), lit(plane), lit(groups));
            let f = proc_macro2::Ident::new(&format!("group_norm_{group}"), proc_macro2::Span::call_site());
            (
                quote!(#k::norm_layers::GroupNormDims { channels: #c, plane: #p, groups: #g }),
                quote!(#k::norm_layers::#f),
            )
        }
        NormDims::Layer { rows, dim } => {
            let (r, d) = (lit(rows), lit(dim));
            let f = proc_macro2::Ident::new(&format!("layer_norm_{group}"), proc_macro2::Span::call_site());
            (quote!(#k::norm_layers::LayerNormDims { rows: #r, dim: #d }), quote!(#k::norm_layers::#f))
        }
    }
}

/// A fused activation applied in place on a layer's output.
fn act_forward(a: Act, output: usize, len: usize) -> TokenStream {
    if a == Act::Identity {
        return quote!();
    }
    let (k, y, len, f) = (k(), write(output), lit(len), act(a));
    quote!(#k::activation::bias_activation_forward(#y, n, #len, ::core::option::Option::None, #f);)
}

/// The fused activation's backward, in place on the output gradient.
fn act_backward(a: Act, grad: usize, output: usize, len: usize) -> TokenStream {
    if a == Act::Identity {
        return quote!();
    }
    let (k, g, y, len, f) = (k(), write(grad), read(Buf::Arena(output)), lit(len), act(a));
    quote!(#k::activation::activation_backward(#g, #y, n * #len, #f);)
}

fn zero_group(plan: &Plan, group: usize) -> TokenStream {
    let (groups, g) = (lit(plan.groups.len()), lit(group));
    quote! {
        for i in 0..n {
            sq_norms[i * #groups + #g] = 0.0;
        }
    }
}

/// The forward of a non-dense step.
pub fn forward(plan: &Plan, step: &Step) -> TokenStream {
    let k = k();
    match step {
        Step::Conv(s) => {
            let (g, x, w, y) = (geom(&s.geom), read(s.input), param(plan, s.weight), write(s.output));
            let bias = s.bias.map_or(quote!(::core::option::Option::None), |b| {
                let b = param(plan, b);
                quote!(::core::option::Option::Some(#b))
            });
            let patches = scratch(plan.scratch.patches);
            let act = act_forward(s.act, s.output, s.geom.output_len());
            quote! {{
                let geom = #g;
                #k::conv_chunks::conv2d_forward(&geom, n, #x, #w, #bias, #patches, #y);
                #act
            }}
        }
        Step::Pool(s) => {
            let (g, x, y) = (pool_geom(s), read(s.input), write(s.output));
            match s.kind {
                PoolKind::Max => {
                    let am = write(s.argmax.expect("max pooling keeps its argmax"));
                    quote!(#k::pool::max_pool2d_forward(&#g, n, #x, #y, #k::embedding::u32_scratch(#am));)
                }
                PoolKind::Avg => quote!(#k::pool::avg_pool2d_forward(&#g, n, #x, #y);),
            }
        }
        Step::GlobalPool(s) => {
            let (c, p, x, y) = (lit(s.channels), lit(s.plane), read(s.input), write(s.output));
            quote!(#k::pool::global_avg_pool_forward(n, #c, #p, #x, #y);)
        }
        Step::Norm(s) => {
            let (dims, f) = norm_call(s.dims, "forward");
            let (x, y, mean, rstd) = (read(s.input), write(s.output), write(s.mean), write(s.rstd));
            let (w, b) = norm_affine(plan, s);
            let act = act_forward(s.act, s.output, s.dims.len());
            quote! {
                #f(&#dims, n, #x, #w, #b, #y, #mean, #rstd);
                #act
            }
        }
        Step::Add(s) => {
            let (a, b, y) = (read(s.inputs[0]), read(s.inputs[1]), buf_ident(s.output));
            let act = act_forward(s.act, s.output, s.len);
            quote! {
                for ((y, a), b) in #y.iter_mut().zip((#a).iter()).zip((#b).iter()) {
                    *y = *a + *b;
                }
                #act
            }
        }
        Step::GradCopy(_) => quote!(),
        Step::Dense(_) | Step::Activation(_) => unreachable!("emitted by program.rs"),
        Step::Embedding(_) | Step::SequenceMean(_) | Step::Lstm(_) => unreachable!("emitted by sequence.rs"),
    }
}

fn norm_affine(plan: &Plan, s: &NormStep) -> (TokenStream, TokenStream) {
    let w = &plan.params[s.weight];
    let (start, mid, end) = (lit(w.offset), lit(w.offset + w.len), lit(w.offset + 2 * w.len));
    (quote!(&p[#start..#mid]), quote!(&p[#mid..#end]))
}

/// The backward of a non-dense step (in the reverse walk).
pub fn backward(plan: &Plan, step: &Step) -> TokenStream {
    let k = k();
    match step {
        Step::Conv(s) => {
            let act = act_backward(s.act, s.delta, s.output, s.geom.output_len());
            let input_grad = s.input_grad.map(|t| {
                let (g, delta, w) = (geom(&s.geom), read(Buf::Arena(s.delta)), param(plan, s.weight));
                let (rows, patches, dx) =
                    (scratch(plan.scratch.rows), scratch(plan.scratch.patches), write(t.write));
                let rows_read = read(Buf::Arena(plan.scratch.rows.expect("sized")));
                let acc = accumulate(t);
                quote! {{
                    let geom = #g;
                    #k::conv::output_grad_to_rows(&geom, n, #delta, #rows);
                    #k::conv::conv2d_backward_input(&geom, n, #rows_read, #w, #patches, #dx);
                    #acc
                }}
            });
            quote!(#act #input_grad)
        }
        Step::Pool(s) => match (s.grad, s.target) {
            (Some(grad), Some(t)) => {
                let (g, dout, dx, acc) =
                    (pool_geom(s), read(Buf::Arena(grad)), write(t.write), accumulate(t));
                let call = match s.kind {
                    PoolKind::Max => {
                        let am = write(s.argmax.expect("max pooling keeps its argmax"));
                        quote!(#k::pool::max_pool2d_backward(&#g, n, #dout, #k::embedding::u32_scratch(#am), #dx);)
                    }
                    PoolKind::Avg => quote!(#k::pool::avg_pool2d_backward(&#g, n, #dout, #dx);),
                };
                quote!(#call #acc)
            }
            _ => quote!(),
        },
        Step::GlobalPool(s) => match (s.grad, s.target) {
            (Some(grad), Some(t)) => {
                let (c, p, dout, dx, acc) =
                    (lit(s.channels), lit(s.plane), read(Buf::Arena(grad)), write(t.write), accumulate(t));
                quote!(#k::pool::global_avg_pool_backward(n, #c, #p, #dout, #dx); #acc)
            }
            _ => quote!(),
        },
        Step::Norm(s) => {
            let act = act_backward(s.act, s.grad, s.output, s.dims.len());
            let (dims, f) = norm_call(s.dims, "backward");
            let (x, dout, mean, rstd) =
                (read(s.input), read(Buf::Arena(s.grad)), read(Buf::Arena(s.mean)), read(Buf::Arena(s.rstd)));
            let (w, _) = norm_affine(plan, s);
            let (dx, affine, acc) = (write(s.input_grad.write), write(s.affine), accumulate(s.input_grad));
            quote! {
                #act
                #f(&#dims, n, #x, #dout, #w, #mean, #rstd, #dx, #affine);
                #acc
            }
        }
        Step::Add(s) => {
            let Some(grad) = s.grad else { return quote!() };
            let act = act_backward(s.act, grad, s.output, s.len);
            // The later reading of a value read twice was given the direct write: emit it first.
            let copies = s.targets.iter().rev().flatten().map(|&t| {
                let (dx, g, acc) = (write(t.write), read(Buf::Arena(grad)), accumulate(t));
                quote!((#dx).copy_from_slice(#g); #acc)
            });
            quote!(#act #(#copies)*)
        }
        Step::GradCopy(s) => grad_copy(s),
        Step::Dense(_) | Step::Activation(_) => unreachable!("emitted by program.rs"),
        Step::Embedding(_) | Step::SequenceMean(_) | Step::Lstm(_) => unreachable!("emitted by sequence.rs"),
    }
}

fn grad_copy(s: &GradCopyStep) -> TokenStream {
    let (dx, g, acc) = (write(s.target.write), read(Buf::Arena(s.grad)), accumulate(s.target));
    quote!((#dx).copy_from_slice(#g); #acc)
}

/// The backward of an activation whose input has other readers: copy, then in place on the copy.
pub fn activation_to_target(s: &ActivationStep, grad: usize, t: GradTarget) -> TokenStream {
    let k = k();
    let (dx, g, y, len, f, acc) = (
        write(t.write),
        read(Buf::Arena(grad)),
        read(Buf::Arena(s.output)),
        lit(s.len),
        act(s.act),
        accumulate(t),
    );
    quote! {
        (#dx).copy_from_slice(#g);
        #k::activation::activation_backward(#dx, #y, n * #len, #f);
        #acc
    }
}

/// Per-example squared norms of a non-dense step's group (zeroed, then added by the kernels).
pub fn norms(plan: &Plan, step: &Step) -> TokenStream {
    let k = k();
    let groups = lit(plan.groups.len());
    match step {
        Step::Conv(s) => {
            let gidx = lit(s.group);
            let (g, x, delta) = (geom(&s.geom), read(s.input), read(Buf::Arena(s.delta)));
            let (patches, rows, slots) =
                (scratch(plan.scratch.patches), scratch(plan.scratch.rows), scratch(plan.scratch.norms));
            let zero = zero_group(plan, s.group);
            let (strat, bias) = (strategy(s.strategy), s.bias.is_some());
            quote! {{
                #zero
                #k::conv_chunks::conv2d_norms_sq(
                    &#g, #strat, #bias, n, #x, #delta, #patches, #rows, #slots, &mut sq_norms[#gidx..], #groups,
                );
            }}
        }
        Step::Norm(s) => {
            let (gidx, width2, affine) = (lit(s.group), lit(2 * s.dims.width()), read(Buf::Arena(s.affine)));
            let zero = zero_group(plan, s.group);
            quote! {
                #zero
                #k::per_example::stored_norms_sq(n, #width2, #affine, &mut sq_norms[#gidx..], #groups);
            }
        }
        _ => quote!(),
    }
}

/// Direct norms of a linear layer (`norms = direct`, or chosen): its per-example gradient formed.
pub fn dense_direct_norms(plan: &Plan, d: &DenseStep) -> TokenStream {
    let k = k();
    let (groups, gidx) = (lit(plan.groups.len()), lit(d.group));
    let (a, delta, n_in, n_out) = (read(d.input), read(Buf::Arena(d.delta)), lit(d.inputs), lit(d.outputs));
    let slots = scratch(plan.scratch.norms);
    let zero = zero_group(plan, d.group);
    let bias = d
        .bias
        .map(|_| quote!(#k::per_example::bias_norms_sq(&layer, n, #delta, &mut sq_norms[#gidx..], #groups);));
    quote! {{
        let layer = #k::per_example::PositionalLayer::new(1, #n_in, #n_out);
        #zero
        #k::per_example::direct_norms_sq(&layer, n, #a, #delta, #slots, &mut sq_norms[#gidx..], #groups);
        #bias
    }}
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

/// The clipped sum (`clipped = true`, factors per group) or the plain sum of a non-dense step.
pub fn gradient(plan: &Plan, step: &Step, clipped: bool) -> TokenStream {
    let k = k();
    let groups = lit(plan.groups.len());
    match step {
        Step::Conv(s) => {
            let gidx = lit(s.group);
            let (g, x, delta) = (geom(&s.geom), read(s.input), read(Buf::Arena(s.delta)));
            let (patches, rows) = (scratch(plan.scratch.patches), scratch(plan.scratch.rows));
            let slices = grad_slices(plan, s.weight, s.bias);
            let factors = if clipped {
                quote!(::core::option::Option::Some((&factors[#gidx..], #groups)))
            } else {
                quote!(::core::option::Option::None)
            };
            quote! {{
                #slices
                #k::conv_chunks::conv2d_weight_gradient(&#g, n, #x, #delta, #factors, #patches, #rows, gw, gb);
            }}
        }
        Step::Norm(s) => {
            let w = &plan.params[s.weight];
            let (start, end, width) = (lit(w.offset), lit(w.offset + 2 * w.len), lit(w.len));
            let affine = read(Buf::Arena(s.affine));
            if clipped {
                let gidx = lit(s.group);
                quote! {
                    #k::norm_layers::affine_clipped_sum_contiguous(
                        #width, n, #affine, &factors[#gidx..], #groups, &mut grad[#start..#end],
                    );
                }
            } else {
                let width2 = lit(2 * w.len);
                quote! {
                    for example in (#affine)[..n * #width2].chunks_exact(#width2) {
                        for (g, v) in grad[#start..#end].iter_mut().zip(example) {
                            *g += *v;
                        }
                    }
                }
            }
        }
        _ => quote!(),
    }
}
