//! Planning of the image ops: `conv2d` (activation fused), pooling, `global_avg_pool`, group/layer
//! norm (activation fused) and the residual `+` (activation fused).
//!
//! A conv keeps its output and its output gradient δ (NCHW) per example; its patches (im2col) and δ
//! as rows are re-derived into shared scratch whenever a pass needs them (forward, backward, norms,
//! clipped sum), so they cost the arena only once, at the largest layer, and the clipped sum never
//! consumes a buffer another pass reads.

use super::{cost, Act, Buf, GradTarget, NormStrategy, Planner, Step, DIRECT_MEMORY_CAP_BYTES};
use crate::check::Shape;
use crate::ir::Op;
use crate::parse::ast::PoolKind;

/// The static shape of a convolution (mirrors `dp_kernels::conv::Conv2dGeometry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub in_c: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_c: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl ConvGeom {
    /// T: output positions.
    pub fn positions(&self) -> usize {
        self.out_h * self.out_w
    }
    /// d: values of one patch of one group.
    pub fn patch_len(&self) -> usize {
        self.in_c / self.groups * self.kernel * self.kernel
    }
    /// p: output channels of one group.
    pub fn out_per_group(&self) -> usize {
        self.out_c / self.groups
    }
    pub fn output_len(&self) -> usize {
        self.out_c * self.positions()
    }
    pub fn patches_len(&self) -> usize {
        self.groups * self.positions() * self.patch_len()
    }
}

/// A convolution with its fused activation.
#[derive(Debug, Clone)]
pub struct ConvStep {
    pub group: usize,
    pub geom: ConvGeom,
    pub input: Buf,
    pub output: usize,
    /// The output gradient, NCHW; δ of the pre-activation after the backward.
    pub delta: usize,
    pub act: Act,
    pub weight: usize,
    pub bias: Option<usize>,
    pub input_grad: Option<GradTarget>,
    pub strategy: NormStrategy,
}

/// Max or average pooling.
#[derive(Debug, Clone)]
pub struct PoolStep {
    pub kind: PoolKind,
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub input: Buf,
    pub output: usize,
    /// Max pooling's argmax (`u32` in an `f32` buffer).
    pub argmax: Option<usize>,
    pub grad: Option<usize>,
    pub target: Option<GradTarget>,
}

/// `[C, H, W] → [C]`.
#[derive(Debug, Clone)]
pub struct GlobalPoolStep {
    pub channels: usize,
    pub plane: usize,
    pub input: Buf,
    pub output: usize,
    pub grad: Option<usize>,
    pub target: Option<GradTarget>,
}

/// The normalisation a norm layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormDims {
    /// `dp_kernels::norm_layers::GroupNormDims` (also layer norm over `[C, H, W]` or `[D]`).
    Group { channels: usize, plane: usize, groups: usize },
    /// `dp_kernels::norm_layers::LayerNormDims`: each of `rows` rows over its `dim` values.
    Layer { rows: usize, dim: usize },
}

impl NormDims {
    /// Mean/rstd values per example.
    pub fn stats_len(&self) -> usize {
        match *self {
            NormDims::Group { groups, .. } => groups,
            NormDims::Layer { rows, .. } => rows,
        }
    }
    /// Values per example.
    pub fn len(&self) -> usize {
        match *self {
            NormDims::Group { channels, plane, .. } => channels * plane,
            NormDims::Layer { rows, dim } => rows * dim,
        }
    }
    /// Width of the affine weight (and bias).
    pub fn width(&self) -> usize {
        match *self {
            NormDims::Group { channels, .. } => channels,
            NormDims::Layer { dim, .. } => dim,
        }
    }
}

/// Group norm or layer norm with its affine and a fused activation; per-example affine gradients are
/// formed in the backward (2·width per example: "direct" is always the cheap strategy).
#[derive(Debug, Clone)]
pub struct NormStep {
    pub group: usize,
    pub dims: NormDims,
    pub input: Buf,
    pub output: usize,
    pub grad: usize,
    pub act: Act,
    pub mean: usize,
    pub rstd: usize,
    /// `[B][2·width]`: the weight gradient then the bias gradient of each example.
    pub affine: usize,
    /// Parameter slot of the weight; the bias follows it in the buffer.
    pub weight: usize,
    /// Where the input gradient goes: a target, or a buffer that is thrown away.
    pub input_grad: GradTarget,
}

/// `act(a + b)`.
#[derive(Debug, Clone)]
pub struct AddStep {
    pub inputs: [Buf; 2],
    pub output: usize,
    pub len: usize,
    pub act: Act,
    pub grad: Option<usize>,
    pub targets: [Option<GradTarget>; 2],
}

/// Plans node `i`; returns whether the node after it (an activation) was fused into it.
pub fn plan_node(pl: &mut Planner<'_>, i: usize) -> bool {
    let node = &pl.graph.nodes[i];
    let field = pl.graph.fields[node.field].clone();
    let x = node.inputs[0];
    let in_shape: Shape = pl.checked.shapes[x.0].clone();
    let out_shape: Shape = pl.checked.shapes[node.output.0].clone();
    match node.op {
        Op::Conv2d(a) => {
            let geom = ConvGeom {
                in_c: in_shape[0],
                in_h: in_shape[1],
                in_w: in_shape[2],
                out_c: a.out.value,
                kernel: a.kernel.value,
                stride: a.stride.value,
                padding: a.padding.value,
                dilation: a.dilation.value,
                groups: a.groups.value,
                out_h: out_shape[1],
                out_w: out_shape[2],
            };
            let (t, d, p) = (geom.positions(), geom.patch_len(), geom.out_per_group());
            let fused = pl.fused_activation(i);
            let (act, result) = fused.unwrap_or((Act::Identity, node.output));
            let output = pl.alloc(i, format!("{field} output"), geom.output_len());
            let delta = pl.alloc(i, format!("{field} delta"), geom.output_len());
            pl.storage[result.0] = Some(Buf::Arena(output));
            pl.grad[result.0] = Some(delta);
            pl.groups.push(field.clone());
            let group = pl.groups.len() - 1;
            let bound = 1.0 / (d as f32).sqrt();
            let k = geom.kernel;
            let weight = pl.param(
                format!("{field}.weight"),
                vec![geom.out_c, geom.in_c / geom.groups, k, k],
                bound,
                None,
            );
            let bias = a.bias.then(|| pl.param(format!("{field}.bias"), vec![geom.out_c], bound, None));
            let strategy = a
                .norms
                .map(NormStrategy::from)
                .unwrap_or_else(|| cost::choose_strategy(t, d, p, DIRECT_MEMORY_CAP_BYTES));
            Planner::need(&mut pl.patches_need, i, geom.patches_len());
            Planner::need(&mut pl.rows_need, i, geom.output_len());
            Planner::need(&mut pl.norms_need, i, cost::scratch_len(strategy, t, d, p));
            let input = pl.storage_of(x);
            let input_grad = pl.target(i, x);
            let product = 2 * (t * geom.out_c * d) as u64;
            let products = 2 + u64::from(input_grad.is_some());
            let norms = geom.groups as u64 * cost::norm_flops(strategy, t, d, p)
                + if a.bias { geom.output_len() as u64 } else { 0 };
            pl.layer_flops[i] = products * product + norms;
            pl.layer_strategy[i] = Some(strategy);
            pl.steps.push(Step::Conv(ConvStep {
                group,
                geom,
                input,
                output,
                delta,
                act,
                weight,
                bias,
                input_grad,
                strategy,
            }));
            fused.is_some()
        }
        Op::Pool2d(a) => {
            let (in_len, out_len) = (pl.width(x), pl.width(node.output));
            let output = pl.alloc(i, format!("{field} {}", node.text), out_len);
            let argmax = (a.kind == PoolKind::Max).then(|| pl.alloc(i, format!("{field} argmax"), out_len));
            pl.storage[node.output.0] = Some(Buf::Arena(output));
            let grad = pl.grad_buffer(i, node.output, format!("{field} {} gradient", node.text));
            pl.grad[node.output.0] = grad;
            let input = pl.storage_of(x);
            let target = pl.target(i, x);
            let k = a.kernel.value as u64;
            pl.layer_flops[i] = out_len as u64 * k * k + (in_len + out_len) as u64;
            pl.steps.push(Step::Pool(PoolStep {
                kind: a.kind,
                channels: in_shape[0],
                in_h: in_shape[1],
                in_w: in_shape[2],
                kernel: a.kernel.value,
                stride: a.stride.value,
                padding: a.padding.value,
                input,
                output,
                argmax,
                grad,
                target,
            }));
            false
        }
        Op::GlobalAvgPool => {
            let (channels, plane) = (in_shape[0], in_shape[1] * in_shape[2]);
            let output = pl.alloc(i, format!("{field} global_avg_pool"), channels);
            pl.storage[node.output.0] = Some(Buf::Arena(output));
            let grad = pl.grad_buffer(i, node.output, format!("{field} global_avg_pool gradient"));
            pl.grad[node.output.0] = grad;
            let input = pl.storage_of(x);
            let target = pl.target(i, x);
            pl.layer_flops[i] = 2 * (channels * plane) as u64;
            pl.steps.push(Step::GlobalPool(GlobalPoolStep { channels, plane, input, output, grad, target }));
            false
        }
        Op::Norm(a) => {
            let dims = match (a.groups, in_shape.len()) {
                (Some(g), _) => NormDims::Group {
                    channels: in_shape[0],
                    plane: in_shape[1..].iter().product(),
                    groups: g.value,
                },
                (None, 2) => NormDims::Layer { rows: in_shape[0], dim: in_shape[1] },
                (None, _) => NormDims::Group {
                    channels: in_shape[0],
                    plane: in_shape[1..].iter().product(),
                    groups: 1,
                },
            };
            let len = dims.len();
            let fused = pl.fused_activation(i);
            let (act, result) = fused.unwrap_or((Act::Identity, node.output));
            let output = pl.alloc(i, format!("{field} output"), len);
            let grad = pl.alloc(i, format!("{field} output gradient"), len);
            let mean = pl.alloc(i, format!("{field} mean"), dims.stats_len());
            let rstd = pl.alloc(i, format!("{field} rstd"), dims.stats_len());
            let affine = pl.alloc(i, format!("{field} per-example affine gradients"), 2 * dims.width());
            pl.storage[result.0] = Some(Buf::Arena(output));
            pl.grad[result.0] = Some(grad);
            pl.groups.push(field.clone());
            let group = pl.groups.len() - 1;
            let weight = pl.param(format!("{field}.weight"), vec![dims.width()], 0.0, Some(1.0));
            pl.param(format!("{field}.bias"), vec![dims.width()], 0.0, Some(0.0));
            let input = pl.storage_of(x);
            let input_grad = match pl.target(i, x) {
                Some(t) => t,
                None => GradTarget {
                    write: pl.alloc(i, format!("{field} unused input gradient"), len),
                    add_into: None,
                },
            };
            pl.layer_flops[i] = 16 * len as u64 + 4 * dims.width() as u64;
            pl.layer_strategy[i] = Some(NormStrategy::Direct);
            pl.steps.push(Step::Norm(NormStep {
                group,
                dims,
                input,
                output,
                grad,
                act,
                mean,
                rstd,
                affine,
                weight,
                input_grad,
            }));
            fused.is_some()
        }
        Op::Add => {
            let len = pl.width(node.output);
            let fused = pl.fused_activation(i);
            let (act, result) = fused.unwrap_or((Act::Identity, node.output));
            let output = pl.alloc(i, format!("{field} sum"), len);
            pl.storage[result.0] = Some(Buf::Arena(output));
            let grad = pl.grad_buffer(i, node.output, format!("{field} sum gradient"));
            pl.grad[result.0] = grad;
            let (a, b) = (node.inputs[0], node.inputs[1]);
            let inputs = [pl.storage_of(a), pl.storage_of(b)];
            let targets = [pl.target(i, a), pl.target(i, b)];
            pl.layer_flops[i] = 3 * len as u64;
            pl.steps.push(Step::Add(AddStep { inputs, output, len, act, grad, targets }));
            fused.is_some()
        }
        _ => unreachable!("not an image op"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{check, ctxt::Ctxt, expand, parse, plan};
    use proc_macro2::TokenStream;
    use quote::quote;

    fn planned_module(args: TokenStream, item: TokenStream) -> plan::Plan {
        let mut cx = Ctxt::new();
        let module: syn::ItemMod = syn::parse2(item).expect("a module");
        let parsed = parse::forward::parse_graph_model(&mut cx, args, module).expect("parses");
        let checked = check::check(&mut cx, &parsed.model, &parsed.graph).expect("checks");
        cx.finish().expect("no errors");
        plan::plan(&parsed.graph, &checked)
    }

    fn skip(forward: TokenStream) -> TokenStream {
        quote! {
            mod m {
                pub struct M {
                    #[layer(conv2d(out = 2, kernel = 3, padding = 1))]
                    a: Conv2d,
                    #[layer(conv2d(out = 2, kernel = 3, padding = 1))]
                    b: Conv2d,
                    #[layer(global_avg_pool, linear(out = 2))]
                    head: Linear,
                }
                impl M {
                    fn forward(&self, x: Input) -> Output { #forward }
                }
            }
        }
    }

    fn args() -> TokenStream {
        quote!(input = [2, 4, 4], loss = cross_entropy(classes = 2))
    }

    #[test]
    fn a_value_read_twice_gets_a_partial_gradient_added_into_its_own() {
        let plan = planned_module(args(), skip(quote! { let h = self.a(x); self.head(self.b(h) + h) }));
        let convs: Vec<&ConvStep> =
            plan.steps.iter().filter_map(|s| if let Step::Conv(c) = s { Some(c) } else { None }).collect();
        let add = plan.steps.iter().find_map(|s| if let Step::Add(a) = s { Some(a) } else { None }).unwrap();
        let h_grad = convs[0].delta;
        // `b` reads h first (forward order): it writes a partial gradient that is added into h's.
        let b_target = convs[1].input_grad.unwrap();
        assert_eq!(b_target.add_into, Some(h_grad));
        assert!(plan.buffers[b_target.write].purpose.contains("partial gradient"));
        // `+` reads h last: it writes h's gradient directly (first in the backward).
        assert_eq!(add.targets[1], Some(GradTarget { write: h_grad, add_into: None }));
        assert_eq!(add.targets[0], Some(GradTarget { write: convs[1].delta, add_into: None }));
        assert_eq!(convs[0].input_grad, None, "nothing upstream of the input is trained");
    }

    #[test]
    fn forward_errors_name_the_field_and_say_why() {
        let out =
            expand(args(), skip(quote! { let h = self.a(x); self.head(self.a(h) + self.c(h)) })).to_string();
        assert!(out.contains("field `a` is called twice"), "{out}");
        assert!(out.contains("has no field `c`"), "{out}");
        let out =
            expand(args(), skip(quote! { let h = self.a(x); let r = self.b(h); self.head(h) })).to_string();
        assert!(out.contains("`r` is computed but never used"), "{out}");
        let out = expand(args(), skip(quote! { let h = self.a(x); self.head(h.relu()) })).to_string();
        assert!(out.contains("field `b` is never called"), "{out}");
        let out = expand(args(), skip(quote! { let h = self.a(x); self.head(self.b(h) + x) })).to_string();
        assert!(out.contains("`+` adds values of one shape"), "{out}");
    }

    #[test]
    fn conv_plan_sizes_shared_scratch_to_the_largest_layer() {
        let plan = planned_module(args(), skip(quote! { let h = self.a(x); self.head(self.b(h) + h) }));
        let patches = &plan.buffers[plan.scratch.patches.unwrap()];
        assert_eq!(patches.len, 16 * 2 * 9, "T·d of the 2→2 3×3 convs over 4×4");
        assert_eq!(plan.buffers[plan.scratch.rows.unwrap()].len, 2 * 16);
        let total: usize = plan.buffers.iter().map(|b| b.len).sum();
        assert_eq!(plan.workspace_per_example, total);
        let bytes: u64 = plan.layers.iter().map(|l| l.bytes_per_example).sum();
        assert_eq!(bytes, 4 * total as u64, "every buffer is counted at one layer");
    }
}
